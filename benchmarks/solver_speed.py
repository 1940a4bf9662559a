"""Speed and accuracy of the FairGrad weight solve: ``fairmtl`` vs. the reference scipy call.

FairGrad (Ban & Ji, 2024) picks task weights ``w > 0`` solving ``A w = w^(-1/alpha)`` with
``A = G G^T`` the Gram matrix of the K task gradients. The paper's reference code solves it
with::

    scipy.optimize.least_squares(fun, np.ones(K) / K, bounds=(0, np.inf))
    # fun(x) = A @ x - x ** (-1 / alpha); every other option default (2-point
    # finite-difference Jacobian), res.x used without checking res.success

This script times that call against :func:`fairmtl.solvers.solve_alpha_fair` (on float64
CPU tensors, and on CUDA too when available) for K = 2, 10, 40, 100 tasks. For every K it
draws random Jacobians ``G`` (K x 512, standard normal rows scaled by per-task factors
log-uniform in [0.1, 10], seeded), one per timed call, so each repeat sees a *different*
matrix and both solvers see the *same* ones. Each timing is one call measured with
``time.perf_counter`` (``torch.cuda.synchronize`` on both sides for CUDA) after a few
untimed warm-up calls; the table reports medians. Accuracy is the normwise backward error
``||A w - w^(-1/a)|| / (||A||_2 ||w|| + ||w^(-1/a)||)``, computed here with numpy in
float64 with the exact spectral norm (median over the timed matrices), plus the fraction of
scipy calls that report ``res.success`` True.

Command line (from the repository root)::

    PYTHONPATH=src python benchmarks/solver_speed.py [--ks 2 10 40 100] [--alpha 2]
        [--repeats 50] [--warmup 3] [--dim 512] [--seed 0] [--threads N] [--no-cuda]
        [--out FILE]

``--repeats`` is the number of timed fairmtl calls per K; scipy gets 20 calls for
K <= 40 and 5 above (it is slower, and slowest at large K), never more than ``--repeats``.
``--out`` also writes the Markdown table, headed by the command, library versions, CPU
thread count, load average and date, to FILE. ``--threads N`` sets torch's intra-op CPU
threads (default: torch's own choice); numpy/scipy keep their BLAS defaults.

The K x K problems are tiny, so the timings are dominated by per-call overheads and are
sensitive to other processes on the machine: on a small, busy machine torch's multi-threaded
kernels can stall waiting for a core (compare ``--threads 1``). The header records the
1-minute load average before and after the run for that reason.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import os
import platform
import shlex
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import scipy
import scipy.optimize
import torch

from fairmtl.solvers import solve_alpha_fair

DEFAULT_KS = (2, 10, 40, 100)


@dataclass(frozen=True)
class Row:
    """Results for one number of tasks K (times in milliseconds)."""

    k: int
    fair_ms: float
    fair_n: int
    fair_berr: float
    fair_converged: float
    fair_iters: float
    scipy_ms: float
    scipy_n: int
    scipy_berr: float
    scipy_success: float
    cuda_ms: float | None = None


def scipy_repeats(k: int, cap: int) -> int:
    """Timed scipy calls at K tasks: 20 up to K = 40, 5 above, capped by ``--repeats``."""
    return max(1, min(cap, 20 if k <= 40 else 5))


def random_grams(
    k: int, n: int, dim: int, rng: np.random.Generator, correlation: float = 0.0
) -> list[np.ndarray]:
    """``n`` Gram matrices ``G G^T`` of random (k, dim) Jacobians with log-uniform row scales.

    Each row of ``G`` is ``sqrt(1 - c) z_i + sqrt(c) z_0`` (standard normal ``z``, one ``z_0``
    shared by all tasks, so pairwise cosines are about ``c = correlation``) times a factor
    ``10^u``, ``u ~ U[-1, 1]``.
    """
    grams = []
    for _ in range(n):
        scales = 10.0 ** rng.uniform(-1.0, 1.0, size=k)
        g = rng.standard_normal((k, dim))
        if correlation > 0:
            shared = rng.standard_normal((1, dim))
            g = np.sqrt(1.0 - correlation) * g + np.sqrt(correlation) * shared
        g = g * scales[:, None]
        a = g @ g.T
        grams.append(0.5 * (a + a.T))
    return grams


def reference_solve(a: np.ndarray, alpha: float) -> scipy.optimize.OptimizeResult:
    """The FairGrad reference call: default ``least_squares`` from ``1/K`` with ``x >= 0``."""
    k = a.shape[0]

    def fun(x: np.ndarray) -> np.ndarray:
        return a @ x - x ** (-1 / alpha)

    x0 = np.ones(k) / k
    return scipy.optimize.least_squares(fun, x0, bounds=(0, np.inf))


def backward_error(a: np.ndarray, w: np.ndarray, alpha: float) -> float:
    """Normwise backward error ``||A w - w^(-1/a)|| / (||A||_2 ||w|| + ||w^(-1/a)||)``.

    Non-finite results (a weight at exactly 0 gives ``w^(-1/a) = inf``) count as ``inf``.
    """
    w = np.asarray(w, dtype=np.float64)
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        rhs = w ** (-1.0 / alpha)
        res = np.linalg.norm(a @ w - rhs)
        denom = np.linalg.norm(a, 2) * np.linalg.norm(w) + np.linalg.norm(rhs)
        err = res / denom if denom > 0 else 0.0
    return float(err) if np.isfinite(err) else float("inf")


def _time_calls(
    call: Callable[[int], object], n: int, warmup: int, sync: Callable[[], None]
) -> tuple[list[float], list[object]]:
    """Time ``call(i)`` for i in [warmup, warmup + n) after ``warmup`` untimed calls.

    Returns per-call times in milliseconds and the results of the timed calls.
    """
    for i in range(warmup):
        call(i)
    sync()
    times, results = [], []
    for i in range(warmup, warmup + n):
        sync()
        t0 = time.perf_counter()
        out = call(i)
        sync()
        times.append(1e3 * (time.perf_counter() - t0))
        results.append(out)
    return times, results


def _no_sync() -> None:
    return None


def bench_k(
    k: int,
    alpha: float,
    repeats: int,
    warmup: int,
    dim: int,
    seed: int,
    use_cuda: bool,
    correlation: float = 0.0,
) -> Row:
    """Benchmark both solvers at K = ``k`` on the same seeded random Gram matrices."""
    n_scipy = scipy_repeats(k, repeats)
    rng = np.random.default_rng([seed, k])
    grams = random_grams(k, warmup + max(repeats, n_scipy), dim, rng, correlation)
    cpu = [torch.from_numpy(a) for a in grams]

    def fair_cpu(i: int) -> object:
        return solve_alpha_fair(cpu[i], alpha)

    fair_t, fair_out = _time_calls(fair_cpu, repeats, warmup, _no_sync)
    fair_berr = [
        backward_error(grams[warmup + j], sol.weights.numpy(), alpha)
        for j, sol in enumerate(fair_out)
    ]
    converged = float(np.mean([sol.info.converged for sol in fair_out]))
    iters = float(np.median([sol.info.iterations for sol in fair_out]))

    def ref(i: int) -> object:
        return reference_solve(grams[i], alpha)

    sci_t, sci_out = _time_calls(ref, n_scipy, warmup, _no_sync)
    sci_berr = [backward_error(grams[warmup + j], res.x, alpha) for j, res in enumerate(sci_out)]
    success = float(np.mean([bool(res.success) for res in sci_out]))

    cuda_ms = None
    if use_cuda:
        dev = [a.to("cuda") for a in cpu]

        def fair_cuda(i: int) -> object:
            return solve_alpha_fair(dev[i], alpha)

        cuda_t, _ = _time_calls(fair_cuda, repeats, warmup, torch.cuda.synchronize)
        cuda_ms = float(np.median(cuda_t))

    return Row(
        k=k,
        fair_ms=float(np.median(fair_t)),
        fair_n=repeats,
        fair_berr=float(np.median(fair_berr)),
        fair_converged=converged,
        fair_iters=iters,
        scipy_ms=float(np.median(sci_t)),
        scipy_n=n_scipy,
        scipy_berr=float(np.median(sci_berr)),
        scipy_success=success,
        cuda_ms=cuda_ms,
    )


def format_table(rows: Sequence[Row]) -> str:
    """The results as a Markdown table (a CUDA column is added when it was measured)."""
    with_cuda = any(r.cuda_ms is not None for r in rows)
    head = [
        "K",
        "fairmtl median (ms)",
        "scipy least_squares median (ms)",
        "speed-up",
        "fairmtl backward error (median)",
        "scipy backward error (median)",
        "scipy success rate",
    ]
    if with_cuda:
        head.append("fairmtl CUDA median (ms)")
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---:" for _ in head) + "|"]
    for r in rows:
        cells = [
            str(r.k),
            f"{r.fair_ms:.3f}",
            f"{r.scipy_ms:.2f}",
            f"{r.scipy_ms / r.fair_ms:.1f}x",
            f"{r.fair_berr:.1e}",
            f"{r.scipy_berr:.1e}",
            f"{r.scipy_success:.0%}",
        ]
        if with_cuda:
            cells.append("n/a" if r.cuda_ms is None else f"{r.cuda_ms:.3f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def format_notes(rows: Sequence[Row], alpha: float) -> str:
    """Sample sizes and fairmtl convergence diagnostics under the table."""
    parts = [
        (
            f"alpha = {alpha:g}. Medians over distinct random Gram matrices per K "
            "(scipy uses the first ones of the fairmtl set)."
        )
    ]
    for r in rows:
        parts.append(
            f"- K = {r.k}: fairmtl {r.fair_n} calls (converged {r.fair_converged:.0%}, "
            f"median {r.fair_iters:g} Newton iterations); scipy {r.scipy_n} calls."
        )
    return "\n".join(parts)


def _load_average() -> str:
    """The 1-minute load average, or "n/a" where the platform has none."""
    try:
        return f"{os.getloadavg()[0]:.2f}"
    except (AttributeError, OSError):
        return "n/a"


def _header(argv: Sequence[str], load_before: str) -> str:
    """Markdown header: command, versions, threads, load and date."""
    cmd = shlex.join(["python", "benchmarks/solver_speed.py", *argv])
    date = _dt.datetime.now().astimezone().isoformat(timespec="seconds")
    return (
        "# FairGrad solver speed: fairmtl vs. scipy least_squares\n\n"
        f"Command: `PYTHONPATH=src {cmd}`  \n"
        f"torch {torch.__version__}, scipy {scipy.__version__}, numpy {np.__version__}, "
        f"Python {platform.python_version()}; torch CPU threads: {torch.get_num_threads()}; "
        f"CUDA: {torch.cuda.get_device_name() if torch.cuda.is_available() else 'not available'}"
        f"  \nCPUs: {os.cpu_count()}; 1-minute load average before / after the run: "
        f"{load_before} / {_load_average()}  \nDate: {date}\n"
    )


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """Command-line options (see the module docstring)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--ks", type=int, nargs="+", default=list(DEFAULT_KS), help="numbers of tasks")
    p.add_argument("--alpha", type=float, default=2.0, help="fairness parameter (default 2)")
    p.add_argument(
        "--repeats",
        type=int,
        default=50,
        help="timed fairmtl calls per K; also caps the scipy calls (20 at K <= 40, else 5)",
    )
    p.add_argument("--warmup", type=int, default=3, help="untimed calls per solver and K")
    p.add_argument("--dim", type=int, default=512, help="gradient dimension m of G (K x m)")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    p.add_argument(
        "--correlation",
        type=float,
        default=0.0,
        help="pairwise cosine of the task gradients, in [0, 1) (default 0: nearly orthogonal)",
    )
    p.add_argument("--threads", type=int, default=None, help="torch intra-op CPU threads")
    p.add_argument("--no-cuda", action="store_true", help="skip the CUDA timings")
    p.add_argument("--out", default=None, help="also write the Markdown report to this file")
    args = p.parse_args(argv)
    positive = [*args.ks, args.repeats, args.dim, 1 if args.threads is None else args.threads]
    if min(positive) < 1 or args.warmup < 0:
        p.error("--ks, --repeats, --dim and --threads must be positive, --warmup non-negative")
    if not args.alpha > 0:
        p.error("--alpha must be positive")
    if not 0.0 <= args.correlation < 1.0:
        p.error("--correlation must be in [0, 1)")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark, print the Markdown table and optionally write it to ``--out``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    use_cuda = torch.cuda.is_available() and not args.no_cuda
    load_before = _load_average()
    t0 = time.perf_counter()
    rows = []
    for k in args.ks:
        rows.append(
            bench_k(
                k,
                args.alpha,
                args.repeats,
                args.warmup,
                args.dim,
                args.seed,
                use_cuda,
                args.correlation,
            )
        )
        print(f"K = {k} done ({time.perf_counter() - t0:.1f} s)", file=sys.stderr)
    table = format_table(rows)
    notes = format_notes(rows, args.alpha)
    print(table)
    print()
    print(notes)
    if args.out is not None:
        with open(args.out, "w", encoding="utf-8") as f:
            f.write(_header(argv, load_before) + "\n" + table + "\n\n" + notes + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
