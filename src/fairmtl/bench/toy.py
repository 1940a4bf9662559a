"""Two-task toy benchmark of FairGrad (Ban & Ji, 2024, Figure 1).

The problem is the one of Nash-MTL (Navon et al., 2022, Figure 1) and CAGrad (Liu et al.,
2021, Figure 1): two losses of ``x in R^2`` with conflicting gradients of unequal scale
(``L1`` carries a factor 0.1). Linear scalarisation (LS) follows the larger gradient and
ends, if it does not stall, at the low-``L2`` end of the Pareto front; MGDA tends to the
other end; Nash-MTL and FairGrad (alpha = 1, 2, 5, 10) stop at Pareto-stationary points
whose position along the front depends on alpha.

Every method runs from the five starts of Nash-MTL with ``torch.optim.Adam`` (lr 1e-3,
float64) for up to 35,000 steps. The aggregator is a black box built by
``fairmtl.make(name, **kwargs)``: at every step it maps the (2, 2) Jacobian (row ``i`` is
the gradient of ``L_i``) to the update direction, which Adam then follows.

Run it with ``fairmtl toy`` (or ``python -m fairmtl.bench toy``): it writes the trajectory
figure and a Markdown table of the final losses and Pareto-stationarity.
"""

from __future__ import annotations

import argparse
import functools
import math
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

import fairmtl
from fairmtl.solvers import min_norm_simplex

_LOG_FLOOR = 5e-6

STARTS: tuple[tuple[float, float], ...] = (
    (-8.5, 7.5),
    (0.0, 0.0),
    (9.0, 9.0),
    (-7.5, -0.5),
    (9.0, -1.0),
)
"""The five initial points of Nash-MTL's and FairGrad's Figure 1."""

METHODS: dict[str, tuple[str, dict[str, Any]]] = {
    "LS": ("sum", {}),
    "MGDA": ("mgda", {}),
    "Nash-MTL": ("nash-mtl", {}),
    "FairGrad a=1": ("fairgrad", {"alpha": 1.0, "warm_start": True}),
    "FairGrad a=2": ("fairgrad", {"alpha": 2.0, "warm_start": True}),
    "FairGrad a=5": ("fairgrad", {"alpha": 5.0, "warm_start": True}),
    "FairGrad a=10": ("fairgrad", {"alpha": 10.0, "warm_start": True}),
}
"""Display label -> (registered name for :func:`fairmtl.make`, keyword arguments).

FairGrad's ``warm_start`` only starts each weight solve from the previous step's weights;
the solution does not depend on it, and it halves the solver's cost per step."""

Method = str | tuple[str, Mapping[str, Any]]


# --------------------------------------------------------------------------- problem


@functools.lru_cache(maxsize=8)
def _constants(dtype: torch.dtype, device: torch.device) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Per-task constants of the toy losses (task axis last), cached per dtype/device."""
    rows = ((-3.5, 3.5), (-1.0, 1.0), (7.0, -7.0), (0.1, 1.0))
    return tuple(torch.tensor(r, dtype=dtype, device=device) for r in rows)  # type: ignore[return-value]


def toy_losses(x: Tensor) -> Tensor:
    """The two toy losses ``(L1, L2)`` of FairGrad's / Nash-MTL's Figure 1.

    With ``c1 = max(tanh(x2 / 2), 0)``, ``c2 = max(tanh(-x2 / 2), 0)``::

        f1 = log(max(|0.5 (-x1 - 7) - tanh(-x2)|, 5e-6)) + 6
        f2 = log(max(|0.5 (-x1 + 3) + tanh(-x2) + 2|, 5e-6)) + 6
        h1 = ((-x1 + 7)^2 + 0.1 (-x2 - 8)^2) / 10 - 20
        h2 = ((-x1 - 7)^2 + 0.1 (-x2 - 8)^2) / 10 - 20
        L1 = 0.1 (c1 f1 + c2 h1),   L2 = c1 f2 + c2 h2

    (the factor 0.1 makes the two gradient scales unequal). Both tasks are computed by
    the same vectorised operations, which keeps the autograd graph small.

    Args:
        x: parameters of shape (..., 2); any leading batch shape is kept.

    Returns:
        Tensor of shape (..., 2): ``(L1, L2)`` for every point.
    """
    shift_f, sign_t, shift_h, scale = _constants(x.dtype, x.device)
    x1, x2 = x[..., 0:1], x[..., 1:2]
    th = torch.tanh(0.5 * x2)
    c1 = th.clamp_min(0.0)
    c2 = (-th).clamp_min(0.0)  # tanh is odd: this is max(tanh(-x2 / 2), 0)
    t = torch.tanh(-x2)
    # f_i = log(max(|-x1 / 2 + (-3.5, 3.5)_i + (-1, 1)_i tanh(-x2)|, 5e-6)) + 6
    f = torch.log((-0.5 * x1 + shift_f + sign_t * t).abs().clamp_min(_LOG_FLOOR)) + 6.0
    h = ((x1 - shift_h).square() + 0.1 * (x2 + 8.0).square()) / 10.0 - 20.0
    return scale * (c1 * f + c2 * h)


def losses_and_jacobian(x: Tensor) -> tuple[Tensor, Tensor]:
    """The losses (2,) at a point ``x`` (2,) and their Jacobian (2, 2), row ``i`` = grad L_i.

    Computed by torch.autograd with a single backward pass: ``x`` is copied once per
    task, task ``i``'s loss is taken at copy ``i`` and the sum of those is
    differentiated, so row ``i`` of the gradient is exactly the gradient of ``L_i`` (the
    same numbers as two ``torch.autograd.grad`` calls, at about half the cost).
    Nothing is accumulated in ``x.grad``.
    """
    copies = x.detach().expand(2, 2).clone().requires_grad_(True)
    losses = toy_losses(copies)
    (jac,) = torch.autograd.grad(losses.diagonal().sum(), copies)
    return losses[0].detach(), jac


def pareto_stationarity(jacobian: Tensor) -> float:
    """Pareto-stationarity measure ``min_{w in simplex} ||G^T w||`` of a (K, m) Jacobian.

    It is zero exactly at Pareto-stationary points: the square root of the value of
    :func:`fairmtl.solvers.min_norm_simplex` (in closed form for K = 2).
    """
    if jacobian.ndim != 2:
        raise ValueError(f"expected a (K, m) Jacobian, got shape {tuple(jacobian.shape)}")
    jac = jacobian.detach().to(torch.float64)
    return math.sqrt(max(float(min_norm_simplex(jac @ jac.T).value), 0.0))


# --------------------------------------------------------------------------- runs


@dataclass
class ToyRun:
    """One trajectory of one method from one start.

    ``xs`` (N, 2) and ``losses`` (N, 2) are recorded every ``record_every`` steps plus the
    final point; ``stationarity`` is :func:`pareto_stationarity` at the final point and
    ``iterations`` the number of optimiser steps taken.
    """

    label: str
    start: tuple[float, float]
    xs: np.ndarray
    losses: np.ndarray
    final_losses: np.ndarray
    stationarity: float
    iterations: int


def resolve_method(method: Method) -> tuple[str, str, dict[str, Any]]:
    """``(label, registered name, kwargs)`` for a label of :data:`METHODS`, a registered
    method name, or a ``(name, kwargs)`` pair."""
    if isinstance(method, str):
        if method in METHODS:
            name, kwargs = METHODS[method]
            return method, name, dict(kwargs)
        return method, method, {}
    name, given = method
    args = ", ".join(f"{k}={v}" for k, v in given.items())
    return (f"{name}({args})" if args else name), name, dict(given)


def run_toy(
    label_or_method: Method,
    start: Sequence[float],
    max_iter: int = 35_000,
    lr: float = 1e-3,
    stop_tol: float = 1e-4,
    *,
    record_every: int = 10,
    check_every: int = 100,
) -> ToyRun:
    """Optimise the toy problem with one aggregator from one start (FairGrad Figure 1).

    Args:
        label_or_method: a label of :data:`METHODS`, a registered name, or ``(name, kwargs)``.
        start: initial ``(x1, x2)``.
        max_iter: maximum number of Adam steps (35,000 as in Nash-MTL).
        lr: Adam learning rate.
        stop_tol: stop early once the Pareto-stationarity measure is below this; it is
            checked every ``check_every`` steps only. ``0`` disables early stopping.
        record_every: record ``x`` and the losses every this many steps.
        check_every: steps between stationarity checks.
    """
    if max_iter < 0 or record_every < 1 or check_every < 1:
        raise ValueError("max_iter must be >= 0, record_every and check_every >= 1")
    label, name, kwargs = resolve_method(label_or_method)
    aggregator = fairmtl.make(name, **kwargs)
    x = torch.tensor([float(start[0]), float(start[1])], dtype=torch.float64)
    optimizer = torch.optim.Adam([x], lr=lr)
    xs: list[Tensor] = []
    ls: list[Tensor] = []
    steps = 0
    while True:
        losses, jac = losses_and_jacobian(x)
        last = steps == max_iter or (
            stop_tol > 0 and steps % check_every == 0 and pareto_stationarity(jac) < stop_tol
        )
        if last or steps % record_every == 0:
            xs.append(x.detach().clone())
            ls.append(losses)
        if last:
            break
        x.grad = aggregator(jac).detach()
        optimizer.step()
        steps += 1
    loss_arr = torch.stack(ls).numpy()
    return ToyRun(
        label=label,
        start=(float(start[0]), float(start[1])),
        xs=torch.stack(xs).numpy(),
        losses=loss_arr,
        final_losses=loss_arr[-1].copy(),
        stationarity=pareto_stationarity(jac),
        iterations=steps,
    )


def run_all(
    methods: Mapping[str, tuple[str, Mapping[str, Any]]] | Iterable[str] = METHODS,
    starts: Iterable[Sequence[float]] = STARTS,
    max_iter: int = 35_000,
    lr: float = 1e-3,
    stop_tol: float = 1e-4,
    *,
    progress: bool = False,
) -> list[ToyRun]:
    """Run every method from every start (the grid of FairGrad's Figure 1).

    ``methods`` is a mapping label -> (name, kwargs) like :data:`METHODS` or an iterable
    of its labels. With ``progress``, one line per run goes to stderr.
    """
    if isinstance(methods, Mapping):
        todo: list[tuple[str, Method]] = [(lab, (n, dict(kw))) for lab, (n, kw) in methods.items()]
    else:
        todo = [(lab, lab) for lab in methods]
    starts = list(starts)
    runs: list[ToyRun] = []
    total = len(todo) * len(starts)
    for label, method in todo:
        for start in starts:
            tic = time.perf_counter()
            run = run_toy(method, start, max_iter=max_iter, lr=lr, stop_tol=stop_tol)
            run.label = label
            runs.append(run)
            if progress:
                print(
                    f"[{len(runs)}/{total}] {label} from {_fmt_start(run.start)}: "
                    f"{run.iterations} steps, stationarity {run.stationarity:.2e}, "
                    f"{time.perf_counter() - tic:.1f} s",
                    file=sys.stderr,
                    flush=True,
                )
    return runs


# --------------------------------------------------------------------------- reports


def _fmt_start(start: Sequence[float]) -> str:
    return f"({start[0]:g}, {start[1]:g})"


def format_table(runs: Iterable[ToyRun]) -> str:
    """A Markdown table: method, start, final L1 and L2, stationarity, iterations."""
    lines = [
        "| method | start | L1 | L2 | stationarity | iterations |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for r in runs:
        lines.append(
            f"| {r.label} | {_fmt_start(r.start)} | {r.final_losses[0]:.4f} | "
            f"{r.final_losses[1]:.4f} | {r.stationarity:.2e} | {r.iterations} |"
        )
    return "\n".join(lines) + "\n"


def _grid(n: int, lim: float = 10.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(x1, x2, losses)`` on an n x n grid over ``[-lim, lim]^2``; losses (n, n, 2)."""
    axis = torch.linspace(-lim, lim, n, dtype=torch.float64)
    g1, g2 = torch.meshgrid(axis, axis, indexing="xy")
    losses = toy_losses(torch.stack((g1, g2), dim=-1))
    return g1.numpy(), g2.numpy(), losses.numpy()


def pareto_front(losses: np.ndarray) -> np.ndarray:
    """The non-dominated rows of an (N, 2) array of loss pairs, sorted by L1."""
    pts = losses[np.lexsort((losses[:, 1], losses[:, 0]))]
    best = np.minimum.accumulate(pts[:, 1])
    keep = np.ones(len(pts), dtype=bool)
    keep[1:] = pts[1:, 1] < best[:-1]
    return pts[keep]


def plot(runs: Sequence[ToyRun], path: str | Path, *, grid: int = 1000) -> None:
    """Save a PNG like FairGrad's Figure 1: one column per method; top row the loss space
    (L1, L2) with the losses of random points of ``[-10, 10]^2`` (grey) and the
    non-dominated subset of a dense grid as the approximate Pareto front (black); bottom row the
    parameter space with contours of ``L1 + L2``. Trajectories are coloured by start.
    ``grid`` is the number of grid points per axis for the front.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.lines import Line2D
    except ImportError as exc:
        raise ImportError("plotting needs matplotlib: pip install 'fairmtl[plot]'") from exc

    labels = list(dict.fromkeys(r.label for r in runs))
    starts = list(dict.fromkeys(r.start for r in runs))
    colors = {s: plt.get_cmap("tab10")(i % 10) for i, s in enumerate(starts)}
    flat = _grid(grid)[2].reshape(-1, 2)
    front = pareto_front(flat)
    cloud = torch.from_numpy(np.random.default_rng(0).uniform(-10.0, 10.0, size=(20_000, 2)))
    sample = toy_losses(cloud).numpy()
    g1, g2, coarse = _grid(200)
    total = coarse.sum(axis=-1)

    ncol = max(len(labels), 1)
    fig, axes = plt.subplots(2, ncol, figsize=(3.2 * ncol, 6.9), squeeze=False)
    for col, label in enumerate(labels):
        top, bottom = axes[0, col], axes[1, col]
        top.scatter(sample[:, 0], sample[:, 1], s=1, c="0.85", rasterized=True)
        top.plot(front[:, 0], front[:, 1], c="k", lw=1.5)
        bottom.contourf(g1, g2, total, levels=30, cmap="Greys", alpha=0.6)
        bottom.contour(g1, g2, total, levels=30, colors="0.5", linewidths=0.3)
        for r in (r for r in runs if r.label == label):
            c = colors[r.start]
            top.plot(r.losses[:, 0], r.losses[:, 1], c=c, lw=1.2)
            top.scatter(*r.losses[0], c=[c], s=15, marker="o")
            top.scatter(*r.losses[-1], c=[c], s=40, marker="*", edgecolors="k", linewidths=0.4)
            bottom.plot(r.xs[:, 0], r.xs[:, 1], c=c, lw=1.2)
            bottom.scatter(*r.xs[0], c=[c], s=15, marker="o")
            bottom.scatter(*r.xs[-1], c=[c], s=40, marker="*", edgecolors="k", linewidths=0.4)
        top.set_title(label)
        top.set_xlabel("$L_1$")
        bottom.set_xlabel("$x_1$")
        bottom.set_xlim(-10, 10)
        bottom.set_ylim(-10, 10)
        if col == 0:
            top.set_ylabel("$L_2$")
            bottom.set_ylabel("$x_2$")
    handles = [Line2D([], [], c="k", lw=1.5, label="Pareto front (grid)")]
    handles += [Line2D([], [], c=colors[s], lw=1.2, label=f"start {_fmt_start(s)}") for s in starts]
    handles += [
        Line2D([], [], ls="", marker="o", c="0.4", label="initial point"),
        Line2D([], [], ls="", marker="*", c="0.4", mec="k", label="final point"),
    ]
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    fig.savefig(path, dpi=120)
    plt.close(fig)


# --------------------------------------------------------------------------- CLI


def _norm(label: str) -> str:
    return "".join(ch for ch in label.lower() if ch not in " _-")


def _method_label(text: str) -> str:
    """Map e.g. ``fairgrad-a=2`` or ``nash_mtl`` onto the label of :data:`METHODS`."""
    by_norm = {_norm(lab): lab for lab in METHODS}
    return by_norm.get(_norm(text), text)


def build_parser(prog: str = "fairmtl toy") -> argparse.ArgumentParser:
    """The argument parser of ``fairmtl toy``."""
    start_list = ", ".join(f"{i}: {_fmt_start(s)}" for i, s in enumerate(STARTS))
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Two-task toy benchmark of FairGrad's Figure 1 (Nash-MTL's toy problem).",
    )
    parser.add_argument(
        "--out", type=Path, default=Path("results/toy"), help="output folder (default: results/toy)"
    )
    parser.add_argument(
        "--max-iter", type=int, default=35_000, help="maximum Adam steps per run (default: 35000)"
    )
    parser.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate")
    parser.add_argument(
        "--stop-tol",
        type=float,
        default=1e-4,
        help="stop once Pareto-stationarity < this (0 disables; default 1e-4)",
    )
    parser.add_argument(
        "--methods",
        nargs="+",
        type=_method_label,
        choices=list(METHODS),
        default=list(METHODS),
        metavar="METHOD",
        help=f"method labels (default: all): {', '.join(METHODS)}",
    )
    parser.add_argument(
        "--starts",
        nargs="+",
        type=int,
        choices=range(len(STARTS)),
        default=list(range(len(STARTS))),
        metavar="I",
        help=f"indices of the starts (default: all): {start_list}",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    parser.add_argument("--no-plot", action="store_true", help="skip the PNG")
    return parser


def main(argv: list[str] | None = None) -> int:
    """``fairmtl toy``: run the grid, write ``toy_results.md`` and ``toy_trajectories.png``
    into ``--out`` and print the table."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.max_iter < 0:
        parser.error("--max-iter must be >= 0")
    methods = {lab: METHODS[lab] for lab in dict.fromkeys(args.methods)}
    starts = [STARTS[i] for i in dict.fromkeys(args.starts)]
    tic = time.perf_counter()
    runs = run_all(
        methods,
        starts,
        max_iter=args.max_iter,
        lr=args.lr,
        stop_tol=args.stop_tol,
        progress=not args.quiet,
    )
    wall = time.perf_counter() - tic
    table = format_table(runs)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "toy_results.md").write_text(table)
    if not args.no_plot:
        plot(runs, args.out / "toy_trajectories.png")
    print(table, end="")
    if not args.quiet:
        print(f"{len(runs)} runs in {wall:.1f} s; wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
