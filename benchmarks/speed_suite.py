"""Speed suite (issue 8): step time and peak memory of every method, as ratios to LS.

One run measures, on the same hardware and as ratios to linear scalarisation (LS):

1. **Step time** of every registered method on three model shapes, with random inputs and
   random targets (seeded):

   - ``lenet``: MultiMNIST's LeNet (``fairmtl.bench.multimnist.MultiLeNet``, K = 2),
     batch 256 of 1 x 28 x 28;
   - ``celeba``: the CelebA CNN (``fairmtl.bench.celeba.CelebANet``, K = 40), 3 x 64 x 64,
     a reduced batch (``--celeba-batch``);
   - ``segnet``: SegNet-MTAN (``fairmtl.bench.segnet.SegNetMTAN``, NYUv2's K = 3 tasks:
     13-class segmentation, depth, normals) at a reduced resolution (``--segnet-size``,
     default 64 x 96) and batch 2.

   A step is ``zero_grad``, the forward pass, the K losses, the method's backward, Adam's
   ``step`` and, for methods that learn from the losses after the step
   (``Balancer.needs_observe``), the second forward pass and ``observe``. Each shape is
   timed for up to four implementations of each method:

   - ``fairmtl``: ``Balancer(...).backward(losses, shared=model.shared_parameters(),
     task_params=model.task_parameters())`` (features-only aggregators skip this mode);
   - ``features``: fairmtl's features mode, ``backward(losses, features=z, ...)``, for
     every Gramian aggregator on the shapes whose model has ``represent``/``decode``
     (lenet, celeba; SegNet-MTAN has no single shared representation);
   - ``TorchJD`` (0.18): ``torchjd.autojac.mtl_backward(losses, features=...)`` then
     ``torchjd.autojac.jac_to_grad(shared_params, aggregator)``, for the aggregators
     TorchJD has; the features are the heads' inputs (one tensor for lenet and celeba,
     each task's attention-masked map for SegNet-MTAN);
   - ``reference``: the original code's approach for LS, FairGrad, Nash-MTL, MGDA and
     CAGrad: K ``torch.autograd.grad(loss_i, shared, retain_graph=True)`` calls in a Python
     loop, the rows flattened into a (K, m) matrix, its Gram matrix solved in numpy/scipy/
     cvxpy (see "Reference solvers" below), ``.grad`` of the shared parameters set from the
     direction, the heads from their own losses, then the step (LS: one backward of the sum).

   All implementations of a shape share one model and one Adam optimizer (so that the
   suite fits in memory); each method keeps its own state. Every runner is warmed up
   first (loss-balancing methods also go through two short "epochs" and then skip ahead,
   so that epoch-based methods, DWA and IGB, are in their steady phase). Then ``--rounds``
   rounds of ``--steps`` steps are interleaved across all runners of the shape (the order
   reversed every other round) and the median over rounds is reported.

2. **Solver-only** time at K = 2, 10, 40: ``weights(gram)`` of fairmtl's FairGrad
   (alpha 2), Nash-MTL, MGDA and CAGrad (c 0.4) against each reference solver on the same
   seeded random Gram matrices (float64, ``G G^T`` of K x 512 Gaussian rows with per-task
   scales log-uniform in [0.1, 10]), median milliseconds and speed-up, with
   ``torch.set_num_threads(--solver-threads)`` (default 1: the K x K problems are tiny).
   The cosine between the two directions (in the Gram metric) checks that both solve the
   same problem.

3. **Jacobian floor** on the celeba shape: for every Gramian weighting that needs the
   Jacobian, the fraction of its step spent outside the Jacobian,
   ``(T_step - T_jac) / T_step``, where ``T_jac`` is the forward pass, the losses and
   ``fairmtl.jacobian(losses, shared_params)`` alone, timed in the same interleaved rounds.

4. **Peak memory**. On CUDA: ``torch.cuda.max_memory_allocated()`` over each runner's
   timed steps minus the memory allocated when they start (model, optimizer state and the
   other runners' state excluded). On CPU: after all timing, each (shape, implementation,
   method) runs in its own process that builds the model and the method, then runs 2
   steps; the table gives the increase of the process's peak resident set size over the
   steps (MiB). The peak is that of ``resource.getrusage(RUSAGE_SELF).ru_maxrss``, read on
   Linux from ``VmHWM`` in ``/proc/self/status`` after resetting it to the current RSS once
   the setup is done: there ``ru_maxrss`` of a process started from a large parent keeps
   the parent's peak (the kernel carries it over at ``exec``) and would hide the steps'
   memory. On Linux one subprocess of this script (``--memory-server``) imports everything
   once and forks a child per row, so that each row does not pay the imports (seconds);
   elsewhere each row is a ``--memory-child`` subprocess. Up to ``--memory-jobs`` rows run
   at a time. ``--no-memory`` skips them.

Reference solvers (written here from the papers' algorithms and the reference code's
documented choices):

- FairGrad: ``scipy.optimize.least_squares(lambda x: A @ x - x ** (-1 / alpha),
  np.ones(K) / K, bounds=(0, np.inf))``, alpha 2, every other option default; the shared
  gradient is then clipped to norm 1 (the reference clips every method).
- Nash-MTL: the sequential convex approximation of Navon et al. (2022, sec. 3.2) in cvxpy:
  ``A`` divided by its Frobenius norm, ``min sum(A a) + grad_phi(a_t) . (a - a_t)``
  subject to ``-log a_i - log (A a)_i <= 0``, where ``phi(a) = sum_i log a_i + log (A a)_i``
  is linearised at the previous iterate ``a_t`` (written with cvxpy parameters, as in the
  reference, so cvxpy canonicalises the problem at every solve), at most 20 iterations
  warm-started from the previous step, stop when ``||A a - 1/a|| < 1e-3`` or the iterate
  moves less than 1e-6; ECOS (``max_iters=100``) when installed, else CLARABEL; a solver
  failure keeps the previous weights; the shared gradient is clipped to norm 1.
- MGDA: Sener & Koltun's min-norm solver as the references' MGDA calls it
  (``find_min_norm_element``: projected gradient steps from the best pair of gradients,
  with the closed-form line search whose inner products are summed over the K x K entries
  in Python; stop when the weights change by less than 1e-5 in L1; no iteration cap in the
  reference, 250 here). The solver-only table also times their Frank-Wolfe variant
  (``mgda/fw``: steps towards the vertex of the smallest ``(A w)_t``, numpy products, at
  most 250). Both get the Gram matrix; the reference computes its entries inside the
  solver, pair by pair, from the gradients (``torch.dot(...).item()``), which is not
  counted here.
- CAGrad: the dual ``min_{w in simplex} w . (A 1/K) + c ||g0|| sqrt(w^T A w)`` with
  ``scipy.optimize.minimize(method="SLSQP")`` from ``1/K`` (bounds [0, 1], equality
  ``sum w = 1``, the reference's 1e-8 terms), c 0.4, direction
  ``(g0 + c ||g0|| / ||g_w|| g_w) / (1 + c^2)``.

The Gram matrix of the reference is computed with torch from the (K, m) matrix of the
per-task gradients (in the training dtype) and handed to numpy, as the reference code does.

TorchJD gets the same hyperparameters as fairmtl where both have them (FairGrad alpha 2,
CAGrad c 0.4, GradVac beta 0.01, Aligned-MTL scale mode "min"); its own defaults
otherwise (MGDA: epsilon 1e-3, 100 iterations; Nash-MTL: 20 iterations, update every step,
max_norm 1.0). fairmtl's methods use their defaults (seeded ones ``seed=0``; GradNorm
``layer=model.last_shared_layer()``).

The task losses are simple (cross-entropy, binary cross-entropy, NLL, L1 and a cosine loss,
each a mean): the timing does not depend on the exact loss, which is a negligible part of
a step and the same for every implementation.

Command line (from the repository root)::

    PYTHONPATH=src python benchmarks/speed_suite.py --out docs/speed.md
        [--shapes lenet celeba segnet] [--methods NAME ...] [--rounds 3] [--steps N]
        [--warmup 1] [--threads N] [--solver-threads 1] [--device cpu|cuda]
        [--no-torchjd] [--no-reference] [--no-memory] [--no-solvers] [--solvers-only]
        [--lenet-batch 256] [--celeba-batch B] [--segnet-batch 2] [--segnet-size 64 96]
        [--segnet-width-div D] [--solver-ks 2 10 40] [--solver-repeats 20]
        [--memory-jobs 2] [--seed 0]

Defaults that depend on the device, so that the whole suite runs in about 15 minutes on
2 CPU cores and unchanged on a GPU (``--device cuda``):

- ``--celeba-batch``: 16 on CUDA, 2 on CPU. At K = 40 every Jacobian method costs about
  40 backward passes per step and the celeba shape has about 28 of them; the per-step
  work that does not depend on the batch (Gram matrix, checks, solver: they scale with
  the 5.2 M shared parameters) weighs more at batch 2 than at 16, so the CPU ratios of
  the Jacobian methods are pessimistic there (``--celeba-batch 16`` takes several times
  longer).
- ``--segnet-width-div``: 1 (the published SegNet-MTAN, 44 M shared parameters) on CUDA,
  8 on CPU (channels divided by 8, as NYUv2's ``cpu`` configuration).
- ``--threads``: 1 on CPU (ratios are stable on a machine with other load, where torch's
  multi-threaded kernels can stall waiting for a core: on a loaded 2-core machine a
  2-thread SegNet step was 100 x slower than a 1-thread one), torch's default on CUDA.

``--steps`` defaults to enough steps for a round of each runner to take 0.2 s (1 to 20,
from the time of its last warm-up step).
``--methods`` takes registered names; LS is always timed (the baseline). When the
``--out`` file already has a ``## Results`` heading (``docs/speed.md``), the text above it
is kept and the report replaces what follows it.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import gc
import importlib
import importlib.metadata
import importlib.util
import inspect
import json
import math
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import scipy.optimize
import torch
import torch.nn.functional as F
from torch import Tensor, nn

import fairmtl
from fairmtl._registry import lookup
from fairmtl.aggregators.base import Aggregator, GramianWeighting
from fairmtl.bench.base import MultiTaskModel
from fairmtl.weighting.base import Weighting
from fairmtl.weighting.ls import LS

SHAPES = ("lenet", "celeba", "segnet")
IMPLS = ("fairmtl", "features", "torchjd", "reference")
REFERENCE_METHODS = ("ls", "fairgrad", "nash-mtl", "mgda", "cagrad")
SOLVER_METHODS = ("fairgrad", "nash-mtl", "mgda", "mgda/fw", "cagrad")
CLIPPED_REFERENCES = ("fairgrad", "nash-mtl")  # the reference clips the shared gradient to 1
TARGET_FEATURES = 1.3  # features mode: at most 1.3 x LS
TARGET_SPEEDUP = 30.0  # solver-only: at least 30 x the reference at K = 40
TARGET_FLOOR = 0.05  # at most 5 % of the step outside the Jacobian (celeba)
ROUND_SECONDS = 0.2  # automatic --steps: a runner's round takes at least this long
MAX_AUTO_STEPS = 20
MEMORY_STEPS = 1
EPOCH_STEPS = 2  # loss-balancing warm-up: this many one-step epochs ...
EPOCH_SKIP = 3  # ... then this many more end_epoch() calls (IGBv2 reaches use_epoch 6)
SLOW_STEP_S = 1.0  # Jacobian runners this slow: only the first of an implementation warms up
SOLVER_DIM = 512
SOLVER_BUDGET_S = 3.0  # per solver and K: stop adding timed calls after this long
SEGNET_HEADS = (("segmentation", 13), ("depth", 1), ("normal", 3))
LR = 1e-4


# ----------------------------------------------------------------------------------------
# settings and workloads
# ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Settings:
    """Batch sizes and resolutions of the three shapes."""

    lenet_batch: int
    celeba_batch: int
    segnet_batch: int
    segnet_size: tuple[int, int]
    segnet_width_div: int
    seed: int

    def child_args(self) -> list[str]:
        """The options that rebuild the same workloads in a ``--memory-child`` process."""
        h, w = self.segnet_size
        return [
            "--lenet-batch", str(self.lenet_batch),
            "--celeba-batch", str(self.celeba_batch),
            "--segnet-batch", str(self.segnet_batch),
            "--segnet-size", str(h), str(w),
            "--segnet-width-div", str(self.segnet_width_div),
            "--seed", str(self.seed),
        ]  # fmt: skip


LossFn = Callable[[Tensor, Tensor], Tensor]


@dataclass
class Workload:
    """One shape: a model, a fixed random batch, its K losses, and one shared optimizer."""

    name: str
    description: str
    model: MultiTaskModel
    x: Tensor
    targets: list[Tensor]
    loss_fns: list[LossFn]
    has_features: bool
    optimizer: torch.optim.Optimizer = field(init=False)
    shared: list[Tensor] = field(init=False)
    heads: list[Tensor] = field(init=False)
    heads_per_task: list[list[Tensor]] = field(init=False)

    def __post_init__(self) -> None:
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=LR)
        self.shared = list(self.model.shared_parameters())
        self.heads = list(self.model.task_parameters())
        self.heads_per_task = [list(self.model.task_parameters(t)) for t in range(self.k)]

    @property
    def k(self) -> int:
        return len(self.loss_fns)

    def losses(self, outputs: Sequence[Tensor]) -> list[Tensor]:
        """The K scalar task losses of the model's outputs."""
        return [fn(o, t) for fn, o, t in zip(self.loss_fns, outputs, self.targets)]


def _normal_loss(pred: Tensor, target: Tensor) -> Tensor:
    """One minus the mean cosine between predicted and target normals."""
    return 1.0 - (pred * target).sum(dim=1).mean()


def _bce(prob: Tensor, target: Tensor) -> Tensor:
    return F.binary_cross_entropy(prob, target)


def build_workload(name: str, settings: Settings, device: torch.device) -> Workload:
    """The model and seeded random batch of one shape, on ``device``."""
    torch.manual_seed(settings.seed)
    gen = torch.Generator().manual_seed(settings.seed)
    if name == "lenet":
        from fairmtl.bench.multimnist import MultiLeNet

        b = settings.lenet_batch
        model: MultiTaskModel = MultiLeNet(2)
        x = torch.randn(b, 1, 28, 28, generator=gen)
        targets = [torch.randint(0, 10, (b,), generator=gen) for _ in range(2)]
        fns: list[LossFn] = [F.cross_entropy] * 2
        desc = f"MultiMNIST LeNet, K = 2, batch {b} of 1 x 28 x 28, cross-entropy"
        has_features = True
    elif name == "celeba":
        from fairmtl.bench.celeba import CelebANet

        b = settings.celeba_batch
        model = CelebANet(40)
        x = torch.rand(b, 3, 64, 64, generator=gen)
        targets = [torch.randint(0, 2, (b, 1), generator=gen).float() for _ in range(40)]
        fns = [_bce] * 40
        desc = f"CelebA CNN, K = 40, batch {b} of 3 x 64 x 64, binary cross-entropy"
        has_features = True
    elif name == "segnet":
        from fairmtl.bench.segnet import SegNetMTAN

        b = settings.segnet_batch
        h, w = settings.segnet_size
        div = settings.segnet_width_div
        model = SegNetMTAN(list(SEGNET_HEADS), width_div=div)
        x = torch.randn(b, 3, h, w, generator=gen)
        normals = torch.randn(b, 3, h, w, generator=gen)
        targets = [
            torch.randint(0, SEGNET_HEADS[0][1], (b, h, w), generator=gen),
            torch.rand(b, 1, h, w, generator=gen),
            normals / normals.norm(dim=1, keepdim=True).clamp_min(1e-12),
        ]
        fns = [F.nll_loss, F.l1_loss, _normal_loss]
        width = "" if div == 1 else f", channels / {div}"
        desc = (
            f"SegNet-MTAN (NYUv2), K = 3, batch {b} of 3 x {h} x {w}{width}; NLL, L1, cosine losses"
        )
        has_features = False
    else:
        raise ValueError(f"unknown shape {name!r}; shapes: {', '.join(SHAPES)}")
    model = model.to(device).train()
    return Workload(
        name=name,
        description=desc,
        model=model,
        x=x.to(device),
        targets=[t.to(device) for t in targets],
        loss_fns=fns,
        has_features=has_features,
    )


# ----------------------------------------------------------------------------------------
# methods
# ----------------------------------------------------------------------------------------


def method_names(requested: Sequence[str] | None) -> list[str]:
    """Registered aggregators and loss weightings (``requested`` ones only, plus LS), sorted."""
    names = [n for n in fairmtl.available() if issubclass(lookup(n), (Aggregator, Weighting))]
    if not requested:
        return names
    wanted = {"ls"}
    for name in requested:
        cls = lookup(name)  # KeyError listing the available names
        if not issubclass(cls, (Aggregator, Weighting)):
            raise TypeError(f"{name!r} is not an aggregator or a loss weighting")
        wanted.add(cls.registered_name)
    return [n for n in names if n in wanted]


def make_method(name: str, workload: Workload) -> Aggregator | Weighting:
    """A fresh method object with the suite's arguments (seed 0, GradNorm's layer, ...)."""
    cls = lookup(name)
    params = inspect.signature(cls).parameters
    kwargs: dict[str, Any] = {}
    if "layer" in params:
        kwargs["layer"] = list(workload.model.last_shared_layer().parameters())
    if "optimizer" in params:
        kwargs["optimizer"] = workload.optimizer
    if "seed" in params:
        kwargs["seed"] = 0
    return cls(**kwargs)


def is_gramian(name: str) -> bool:
    return issubclass(lookup(name), GramianWeighting)


def is_features_only(name: str) -> bool:
    return bool(getattr(lookup(name), "features_only", False))


def needs_jacobian(name: str, k: int) -> bool:
    """A Gramian weighting whose weights depend on the gradients (not Mean/Sum)."""
    cls = lookup(name)
    if not issubclass(cls, GramianWeighting) or cls.features_only:
        return False
    return fairmtl.make(name).fixed_weights(k) is None


def torchjd_available() -> bool:
    try:
        importlib.import_module("torchjd.autojac")
    except ImportError:
        return False
    return True


def make_torchjd_aggregator(name: str, k: int) -> Any | None:
    """TorchJD's aggregator for a registered name (fairmtl's defaults where both have one)."""
    agg = importlib.import_module("torchjd.aggregation")
    ours = fairmtl.make(name) if name in fairmtl.available() else None
    factories: dict[str, Callable[[], Any]] = {
        "upgrad": lambda: agg.UPGrad(),
        "mgda": lambda: agg.MGDA(),
        "pcgrad": lambda: agg.PCGrad(),
        "imtl-g": lambda: agg.IMTLG(),
        "aligned-mtl": lambda: agg.AlignedMTL(scale_mode=getattr(ours, "scale_mode", "min")),
        "cagrad": lambda: agg.CAGrad(c=float(getattr(ours, "c", 0.4))),
        "nash-mtl": lambda: agg.NashMTL(n_tasks=k),
        "graddrop": lambda: agg.GradDrop(),
        "gradvac": lambda: agg.GradVac(beta=float(getattr(ours, "beta", 0.01))),
        "fairgrad": lambda: agg.FairGrad(alpha=float(getattr(ours, "alpha", 2.0))),
        "mean": lambda: agg.Mean(),
        "sum": lambda: agg.Sum(),
    }
    factory = factories.get(name)
    return None if factory is None else factory()


TORCHJD_NAMES = (
    "aligned-mtl", "cagrad", "fairgrad", "graddrop", "gradvac", "imtl-g", "mean", "mgda",
    "nash-mtl", "pcgrad", "sum", "upgrad",
)  # fmt: skip


# ----------------------------------------------------------------------------------------
# reference solvers
# ----------------------------------------------------------------------------------------


def reference_fairgrad(a: np.ndarray, alpha: float = 2.0) -> np.ndarray:
    """FairGrad's reference solve of ``A w = w^(-1/alpha)``: default ``least_squares``."""
    k = a.shape[0]

    def residual(x: np.ndarray) -> np.ndarray:
        return a @ x - x ** (-1.0 / alpha)

    return scipy.optimize.least_squares(residual, np.ones(k) / k, bounds=(0, np.inf)).x


def _segment_min_norm(v1v1: float, v1v2: float, v2v2: float) -> tuple[float, float]:
    """``min_{g in [0, 1]} ||g v1 + (1 - g) v2||^2`` from the three inner products.

    Sener & Koltun's closed form, with their code's clipping: at an end of the segment it
    returns ``g = 0.999`` (``v1`` side) or ``0.001`` (``v2`` side), not 1 or 0, and the
    value of that end. Returns ``(g, value)``.
    """
    if v1v2 >= v1v1:
        return 0.999, v1v1
    if v1v2 >= v2v2:
        return 0.001, v2v2
    g = (v2v2 - v1v2) / (v1v1 + v2v2 - 2.0 * v1v2)
    return g, v2v2 + g * (v1v2 - v2v2)


def _best_pair(dps: dict[tuple[int, int], float], k: int) -> np.ndarray:
    """The references' start: the best segment between two gradients (a loop over pairs)."""
    best = (math.inf, 0, 1, 0.0)
    for i in range(k):
        for j in range(i + 1, k):
            g, value = _segment_min_norm(dps[(i, i)], dps[(i, j)], dps[(j, j)])
            if value < best[0]:
                best = (value, i, j, g)
    _, i, j, g = best
    w = np.zeros(k)
    w[i], w[j] = g, 1.0 - g
    return w


def _min_norm_start(a: np.ndarray) -> tuple[dict[tuple[int, int], float], np.ndarray]:
    """The references' ``dps`` (the Gram entries in a dict keyed by task pairs) and their
    start, the best pair of gradients (the answer for K <= 2)."""
    k = a.shape[0]
    dps = {(i, j): float(a[i, j]) for i in range(k) for j in range(k)}
    return dps, (np.ones(1) if k == 1 else _best_pair(dps, k))


def reference_mgda_fw(a: np.ndarray, max_iter: int = 250, stop: float = 1e-5) -> np.ndarray:
    """Sener & Koltun's Frank-Wolfe min-norm solver (``find_min_norm_element_FW``) on ``A``.

    Start from the best pair; then move towards the vertex ``t = argmin (A w)_t`` with the
    closed-form line search on the segment from ``w`` to ``e_t`` (numpy products), until
    the weights change by less than ``stop`` (L1) or ``max_iter`` steps.
    """
    _, w = _min_norm_start(a)
    if len(w) <= 2:
        return w
    for _ in range(max_iter):
        aw = a @ w
        t = int(np.argmin(aw))
        g, _ = _segment_min_norm(float(w @ aw), float(w @ a[:, t]), float(a[t, t]))
        new = g * w
        new[t] += 1.0 - g
        if np.abs(new - w).sum() < stop:
            return w
        w = new
    return w


def _project_to_simplex(y: np.ndarray) -> np.ndarray:
    """Euclidean projection onto the simplex by sorting (the references' routine)."""
    m = len(y)
    desc = np.sort(y)[::-1]
    shift = (y.sum() - 1.0) / m
    total = 0.0
    for i in range(m - 1):
        total += desc[i]
        candidate = (total - 1.0) / (i + 1.0)
        if candidate > desc[i + 1]:
            shift = candidate
            break
    return np.maximum(y - shift, 0.0)


def _projected_step(w: np.ndarray, descent: np.ndarray) -> np.ndarray:
    """The references' ``_next_point``: a step along the descent direction made tangent to
    the simplex, as long as it stays in the box (steps below 1e-7 skipped), projected."""
    k = len(w)
    tangent = descent - descent.sum() / k
    neg, pos = tangent < 0, tangent > 0
    to_zero = -w[neg] / tangent[neg]
    to_one = (1.0 - w[pos]) / tangent[pos]
    t = 1.0
    if np.any(to_zero > 1e-7):
        t = float(np.min(to_zero[to_zero > 1e-7]))
    if np.any(to_one > 1e-7):
        t = min(t, float(np.min(to_one[to_one > 1e-7])))
    return _project_to_simplex(tangent * t + w)


def reference_mgda(a: np.ndarray, max_iter: int = 250, stop: float = 1e-5) -> np.ndarray:
    """The min-norm solver that the references' MGDA calls (``find_min_norm_element``).

    Sener & Koltun's projected gradient method, as in their code and Nash-MTL's/FairGrad's
    copies: start from the best pair; each iteration takes :func:`_projected_step` along
    ``-A w``, then the closed-form line search between ``w`` and the new point, whose three
    inner products are summed entry by entry over the K x K ``dps`` in Python (as the
    reference does); stop when the weights change by less than ``stop`` (L1). The
    reference never increments its iteration counter (no cap); here at most ``max_iter``.
    """
    dps, w = _min_norm_start(a)
    k = len(w)
    if k <= 2:
        return w
    for _ in range(max_iter):
        new = _projected_step(w, -(a @ w))
        v1v1 = v1v2 = v2v2 = 0.0
        for i in range(k):
            for j in range(k):
                v1v1 += w[i] * w[j] * dps[(i, j)]
                v1v2 += w[i] * new[j] * dps[(i, j)]
                v2v2 += new[i] * new[j] * dps[(i, j)]
        g, _ = _segment_min_norm(v1v1, v1v2, v2v2)
        step = g * w + (1.0 - g) * new
        if np.abs(step - w).sum() < stop:
            return w
        w = step
    return w


def cagrad_dual_objective(a: np.ndarray, w: np.ndarray, c: float) -> float:
    """CAGrad's dual ``F(w) = w . (A 1/K) + c ||g0|| sqrt(w^T A w)`` (no epsilon terms)."""
    k = a.shape[0]
    g0_norm = math.sqrt(max(float(a.mean()), 0.0))
    return float(w @ (a @ np.full(k, 1.0 / k)) + c * g0_norm * math.sqrt(max(w @ a @ w, 0.0)))


def reference_cagrad(a: np.ndarray, c: float = 0.4) -> tuple[np.ndarray, np.ndarray]:
    """CAGrad's reference solve: SLSQP on the dual from ``1/K``.

    Returns ``(coefficients, w)``: the direction is ``G^T coefficients``, ``w`` the dual
    weights on the simplex. Uses the reference's ``1e-8`` guards and ``1 + c^2`` rescale.
    """
    k = a.shape[0]
    b = np.full(k, 1.0 / k)
    radius = c * math.sqrt(float(a.mean()) + 1e-8) + 1e-8
    ab = a @ b

    def objective(w: np.ndarray) -> float:
        return float(w @ ab + radius * math.sqrt(float(w @ a @ w) + 1e-8))

    res = scipy.optimize.minimize(
        objective,
        b.copy(),
        method="SLSQP",
        bounds=[(0.0, 1.0)] * k,
        constraints=({"type": "eq", "fun": lambda w: 1.0 - w.sum()},),
    )
    w = res.x
    lam = radius / (math.sqrt(max(float(w @ a @ w), 0.0)) + 1e-8)
    return (b + lam * w) / (1.0 + c**2), w


def cvxpy_solver() -> str | None:
    """ECOS (the reference's solver) when installed, else CLARABEL, else cvxpy's choice."""
    cp = importlib.import_module("cvxpy")
    installed = cp.installed_solvers()
    for name in ("ECOS", "CLARABEL"):
        if name in installed:
            return name
    return None


class NashReference:
    """Nash-MTL's reference weight solve: sequential convex approximation in cvxpy.

    Solves ``A a = 1 / a`` for ``A`` divided by its Frobenius norm (Navon et al. 2022,
    sec. 3.2): each iteration minimises ``sum(A a) + grad_phi(a_t) . (a - a_t)`` subject to
    ``log a_i + log (A a)_i >= 0``, with ``phi(a) = sum_i log a_i + log (A a)_i`` (concave)
    linearised at the previous iterate. The problem is built once (cvxpy parameters for
    ``A`` and ``a_t``; the linearisation is an expression of them, so cvxpy canonicalises
    it at every solve, as in the reference) and the iterations start from the previous
    call's weights (``reset()``: from ones).
    """

    def __init__(self, k: int, iterations: int = 20, tol: float = 1e-3) -> None:
        cp = importlib.import_module("cvxpy")
        self._cp = cp
        self.k = k
        self.iterations = iterations
        self.tol = tol
        self.solver = cvxpy_solver()
        self.failures = 0
        self.last_iterations = 0
        self.alpha = cp.Variable(k, nonneg=True)
        self.anchor = cp.Parameter(k, value=np.ones(k))
        self.gram = cp.Parameter((k, k), value=np.eye(k))
        g_alpha = self.gram @ self.alpha
        slope = 1 / self.anchor + (1 / (self.gram @ self.anchor)) @ self.gram
        objective = cp.Minimize(cp.sum(g_alpha) + slope @ (self.alpha - self.anchor))
        constraints = [-cp.log(self.alpha[i]) - cp.log(g_alpha[i]) <= 0 for i in range(k)]
        self.problem = cp.Problem(objective, constraints)
        self.reset()

    def reset(self) -> None:
        self.previous = np.ones(self.k)

    def _solve_once(self) -> None:
        options: dict[str, Any] = {"warm_start": True}
        if self.solver == "ECOS":
            options["max_iters"] = 100
        if self.solver is not None:
            options["solver"] = self.solver
        with warnings.catch_warnings():  # "not DPP": re-canonicalised every solve, as intended
            warnings.filterwarnings("ignore", message=".*not DPP.*")
            self.problem.solve(**options)

    def __call__(self, a: np.ndarray) -> np.ndarray:
        """The weights for the Gram matrix ``a`` (for ``a / ||a||_F``, as the reference)."""
        norm = float(np.linalg.norm(a))
        gram = a / norm if norm > 0 else a
        self.gram.value = gram
        current = self.previous
        self.last_iterations = 0
        for _ in range(self.iterations):
            self.last_iterations += 1
            self.alpha.value = current
            self.anchor.value = current
            try:
                self._solve_once()
            except (self._cp.error.SolverError, ValueError):
                self.failures += 1
                self.alpha.value = current
            new = self.alpha.value
            if new is None:
                break
            residual = np.linalg.norm(gram @ current - 1.0 / (current + 1e-10))
            if residual < self.tol or np.linalg.norm(new - current) < 1e-6:
                break
            current = np.asarray(new, dtype=np.float64)
        self.previous = current
        return current


ReferenceSolver = Callable[[np.ndarray], np.ndarray]


def make_reference_solver(name: str, k: int) -> ReferenceSolver:
    """The reference solver of a method, returning the direction's coefficients."""
    if name == "fairgrad":
        return reference_fairgrad
    if name == "mgda":
        return reference_mgda
    if name == "mgda/fw":
        return reference_mgda_fw
    if name == "cagrad":
        return lambda a: reference_cagrad(a)[0]
    if name == "nash-mtl":
        return NashReference(k)
    raise ValueError(f"no reference solver for {name!r}")


# ----------------------------------------------------------------------------------------
# runners: one (implementation, method) on a workload
# ----------------------------------------------------------------------------------------


def blas_threads(n: int) -> contextlib.AbstractContextManager[Any]:
    """Limit numpy's/scipy's BLAS to ``n`` threads inside the block (needs threadpoolctl).

    The reference solvers call BLAS on K x K matrices; a multi-threaded BLAS waiting for a
    busy core made SLSQP at K = 40 twenty times slower on a loaded 2-core machine.
    """
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(limits=n, user_api="blas")


def _blas_note() -> str:
    return (
        "limited like torch's"
        if importlib.util.find_spec("threadpoolctl") is not None
        else "not limited (threadpoolctl missing)"
    )


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@contextlib.contextmanager
def _head_inputs(model: MultiTaskModel) -> Iterator[list[Tensor]]:
    """Collect the input of every task head during a forward pass (TorchJD's features)."""
    captured: list[Tensor] = []
    handles = [
        head.register_forward_pre_hook(lambda _m, args: captured.append(args[0]))
        for head in model.heads
    ]
    try:
        yield captured
    finally:
        for h in handles:
            h.remove()


class Runner:
    """One implementation of one method stepping on a workload."""

    epoch_based = False  # gets the loss-balancing warm-up epochs

    def __init__(self, workload: Workload, method: str) -> None:
        self.w = workload
        self.method = method

    def step(self) -> None:
        raise NotImplementedError

    def end_epoch(self) -> None:
        """Tell epoch-based methods that an epoch ended (default: nothing)."""

    def warm_up(self, steps: int, sync: Callable[[], None]) -> float | None:
        """Bring the method to its steady phase, then ``steps`` more steps.

        Returns the time of the last of these steps in seconds (``None`` without any).
        """
        if self.epoch_based:
            for _ in range(EPOCH_STEPS):
                self.step()
                self.end_epoch()
            for _ in range(EPOCH_SKIP):
                self.end_epoch()
        last = None
        for _ in range(steps):
            sync()
            t0 = time.perf_counter()
            self.step()
            sync()
            last = time.perf_counter() - t0
        return last


class JacobianClock:
    """Accumulates the time of the Balancer's Jacobian calls and of the runners' forward
    passes and losses, inside the timed steps: the Jacobian floor measured within each
    step, not as a difference between runners (whose step times drift by +-10 %)."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self._original: Callable[..., Tensor] | None = None

    def install(self) -> None:
        """Route ``fairmtl.balancer.jacobian`` through :meth:`_timed`."""
        module = importlib.import_module("fairmtl.balancer")
        if self._original is None:
            self._original = getattr(module, "jacobian")  # noqa: B009 (a module's function)
            setattr(module, "jacobian", self._timed)  # noqa: B010

    def uninstall(self) -> None:
        if self._original is not None:
            setattr(importlib.import_module("fairmtl.balancer"), "jacobian", self._original)  # noqa: B010
            self._original = None

    def _timed(self, *args: Any, **kwargs: Any) -> Tensor:
        assert self._original is not None
        t0 = time.perf_counter()
        out = self._original(*args, **kwargs)
        _sync(out.device)
        self.seconds += time.perf_counter() - t0
        return out

    @contextlib.contextmanager
    def forward(self, device: torch.device) -> Iterator[None]:
        """Time a forward pass and its losses."""
        t0 = time.perf_counter()
        yield
        _sync(device)
        self.seconds += time.perf_counter() - t0


CLOCK = JacobianClock()


class FairmtlRunner(Runner):
    """``fairmtl.Balancer`` on the shared parameters, or in features mode."""

    def __init__(self, workload: Workload, method: str, features: bool = False) -> None:
        super().__init__(workload, method)
        obj = make_method(method, workload)
        if isinstance(obj, Aggregator):
            self.balancer = fairmtl.Balancer(aggregator=obj)
        else:
            self.balancer = fairmtl.Balancer(weighting=obj)
            self.epoch_based = not isinstance(obj, LS)
        self.features = features

    def step(self) -> None:
        w = self.w
        w.optimizer.zero_grad(set_to_none=True)
        if self.features:
            z = w.model.represent(w.x)
            losses = torch.stack(w.losses(w.model.decode(z)))
            self.balancer.backward(losses, features=z, task_params=w.heads)
        else:
            with CLOCK.forward(w.x.device):
                losses = torch.stack(w.losses(w.model(w.x)))
            self.balancer.backward(losses, shared=w.shared, task_params=w.heads)
        w.optimizer.step()
        if self.balancer.needs_observe:
            with torch.no_grad(), fairmtl.frozen_norm_stats(w.model):
                self.balancer.observe(torch.stack(w.losses(w.model(w.x))))

    def end_epoch(self) -> None:
        self.balancer.end_epoch()


class TorchJDRunner(Runner):
    """TorchJD: ``mtl_backward`` on the heads' inputs, then ``jac_to_grad``."""

    def __init__(self, workload: Workload, method: str) -> None:
        super().__init__(workload, method)
        autojac = importlib.import_module("torchjd.autojac")
        self._mtl_backward = autojac.mtl_backward
        self._jac_to_grad = autojac.jac_to_grad
        self.aggregator = make_torchjd_aggregator(method, workload.k)
        if self.aggregator is None:
            raise ValueError(f"TorchJD has no {method!r}")

    def step(self) -> None:
        w = self.w
        w.optimizer.zero_grad(set_to_none=True)
        if w.has_features:
            z = w.model.represent(w.x)
            losses = w.losses(w.model.decode(z))
            features = [z]
        else:
            with _head_inputs(w.model) as captured:
                losses = w.losses(w.model(w.x))
            features = list({id(t): t for t in captured}.values())  # each tensor once
        self._mtl_backward(
            losses, features=features, tasks_params=w.heads_per_task, shared_params=w.shared
        )
        self._jac_to_grad(w.shared, self.aggregator)
        w.optimizer.step()


class ReferenceRunner(Runner):
    """The original code's approach: a loop of K ``autograd.grad`` calls, numpy solvers."""

    def __init__(self, workload: Workload, method: str) -> None:
        super().__init__(workload, method)
        self.solver: ReferenceSolver | None = None
        if method != "ls":
            self.solver = make_reference_solver(method, workload.k)
        self.clip = method in CLIPPED_REFERENCES

    def step(self) -> None:
        w = self.w
        w.optimizer.zero_grad(set_to_none=True)
        losses = w.losses(w.model(w.x))
        if self.solver is None:
            torch.stack(losses).sum().backward()
            w.optimizer.step()
            return
        head_grads = torch.autograd.grad(
            torch.stack(losses).sum(),
            w.heads,
            retain_graph=True,
            allow_unused=True,
            materialize_grads=True,
        )
        rows = []
        for i, loss in enumerate(losses):
            grads = torch.autograd.grad(
                loss, w.shared, retain_graph=i < len(losses) - 1, allow_unused=True,
                materialize_grads=True,
            )  # fmt: skip
            rows.append(torch.cat([g.reshape(-1) for g in grads]))
        jac = torch.stack(rows)
        gram = (jac @ jac.T).detach().cpu().numpy().astype(np.float64)
        coef = torch.from_numpy(np.asarray(self.solver(gram), dtype=np.float64))
        direction = coef.to(device=jac.device, dtype=jac.dtype) @ jac
        offset = 0
        for p in w.shared:
            n = p.numel()
            p.grad = direction[offset : offset + n].view_as(p).clone()
            offset += n
        for p, g in zip(w.heads, head_grads):
            p.grad = g
        if self.clip:
            nn.utils.clip_grad_norm_(w.shared, 1.0)
        w.optimizer.step()


class JacobianRunner(Runner):
    """Forward pass, losses and ``fairmtl.jacobian`` alone (no update), then the Gram
    matrix ``J J^T``, timed on its own (``product_s``, seconds per step; the floor table's
    "of which J J^T")."""

    def __init__(self, workload: Workload) -> None:
        super().__init__(workload, "jacobian")
        self.product_s: list[float] = []

    def step(self) -> None:
        w = self.w
        losses = torch.stack(w.losses(w.model(w.x)))
        jac = fairmtl.jacobian(losses, w.shared, retain_graph=False)
        _sync(jac.device)
        t0 = time.perf_counter()
        (jac @ jac.T).sum().item()  # the product, and waiting for it
        self.product_s.append(time.perf_counter() - t0)


Key = tuple[str, str]  # (implementation, method); ("jacobian", "jacobian"): JacobianRunner
GRAM_KEY: Key = ("jacobian", "J J^T")  # the Gram product's time, measured by JacobianRunner
IN_STEP = "in-step T_jac"  # (IN_STEP, method): forward + losses + Jacobian inside its steps


def make_runner(workload: Workload, impl: str, method: str) -> Runner:
    if impl == "fairmtl":
        return FairmtlRunner(workload, method)
    if impl == "features":
        return FairmtlRunner(workload, method, features=True)
    if impl == "torchjd":
        return TorchJDRunner(workload, method)
    if impl == "reference":
        return ReferenceRunner(workload, method)
    if impl == "jacobian":
        return JacobianRunner(workload)
    raise ValueError(f"unknown implementation {impl!r}")


def planned_keys(
    workload: Workload, methods: Sequence[str], torchjd: bool, reference: bool
) -> list[Key]:
    """Every (implementation, method) the suite times on this workload."""
    keys: list[Key] = []
    for m in methods:
        if not is_features_only(m):
            keys.append(("fairmtl", m))
        if workload.has_features and is_gramian(m):
            keys.append(("features", m))
        if torchjd and m in TORCHJD_NAMES:
            keys.append(("torchjd", m))
        if reference and m in REFERENCE_METHODS:
            keys.append(("reference", m))
    if workload.name == "celeba" and any(needs_jacobian(m, workload.k) for m in methods):
        keys.append(("jacobian", "jacobian"))
    return keys


# ----------------------------------------------------------------------------------------
# timing
# ----------------------------------------------------------------------------------------


@dataclass
class ShapeResult:
    """Per-round step times (s), CUDA peaks, errors and memory of one shape."""

    name: str
    description: str
    k: int
    steps: dict[Key, int] = field(default_factory=dict)
    rounds: int = 0
    times: dict[Key, list[float]] = field(default_factory=dict)
    errors: dict[Key, str] = field(default_factory=dict)
    memory_mib: dict[Key, float] = field(default_factory=dict)
    memory_errors: dict[Key, str] = field(default_factory=dict)
    unwarmed: list[Key] = field(default_factory=list)
    seconds: float = 0.0

    def median_ms(self, key: Key) -> float | None:
        t = self.times.get(key)
        return 1e3 * statistics.median(t) if t else None


def _error(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".replace("\n", " ").replace("|", "/")
    return text if len(text) <= 160 else text[:157] + "..."


def uses_jacobian(key: Key, k: int) -> bool:
    """Whether a runner computes the (K, m) Jacobian of the shared parameters every step."""
    impl, method = key
    if impl in ("torchjd", "jacobian"):
        return True
    if impl == "reference":
        return method != "ls"
    if impl != "fairmtl":
        return False
    cls = lookup(method)
    if not issubclass(cls, Aggregator) or cls.features_only:
        return False
    return fairmtl.make(method).fixed_weights(k) is None


def auto_steps(step_seconds: float | None) -> int:
    """Steps per round for a runner whose warm-up step took ``step_seconds``: enough for
    :data:`ROUND_SECONDS`, between 1 and :data:`MAX_AUTO_STEPS` (1 when not measured)."""
    if step_seconds is None:
        return 1
    return min(MAX_AUTO_STEPS, max(1, math.ceil(ROUND_SECONDS / max(step_seconds, 1e-9))))


def time_shape(
    name: str,
    settings: Settings,
    device: torch.device,
    methods: Sequence[str],
    args: argparse.Namespace,
) -> ShapeResult:
    """Warm up every runner of a shape, then time interleaved rounds (with :data:`CLOCK`
    installed, for the in-step Jacobian floor)."""
    start = time.perf_counter()
    workload = build_workload(name, settings, device)
    result = ShapeResult(name, workload.description, workload.k)
    runners: dict[Key, Runner] = {}
    steps: dict[Key, int] = {}
    slow: set[str] = set()  # implementations whose Jacobian runners take >= SLOW_STEP_S
    for key in planned_keys(workload, methods, args.torchjd, args.reference):
        jac = uses_jacobian(key, workload.k)
        warmup = 0 if jac and key[0] in slow and args.rounds >= 3 else args.warmup
        try:
            runner = make_runner(workload, *key)
            last = runner.warm_up(warmup, lambda: _sync(device))
        except Exception as exc:  # noqa: BLE001 (a failing method must not stop the suite)
            result.errors[key] = _error(exc)
            print(f"[{name}] {key[0]} {key[1]}: {result.errors[key]}", file=sys.stderr)
            continue
        runners[key] = runner
        steps[key] = args.steps or auto_steps(last)
        if jac and last is not None and last >= SLOW_STEP_S:
            slow.add(key[0])
        if warmup < args.warmup:
            result.unwarmed.append(key)
    print(f"[{name}] {len(runners)} runners warmed up ({time.perf_counter() - start:.0f} s)",
          file=sys.stderr)  # fmt: skip
    result.steps, result.rounds = steps, args.rounds
    cuda = device.type == "cuda"
    keys = list(runners)
    for r in range(args.rounds):
        for key in keys if r % 2 == 0 else reversed(keys):
            if key in result.errors:
                continue
            runner = runners[key]
            base = 0
            if cuda:
                workload.optimizer.zero_grad(set_to_none=True)
                _sync(device)
                base = torch.cuda.memory_allocated(device)
                torch.cuda.reset_peak_memory_stats(device)
            try:
                _sync(device)
                if isinstance(runner, JacobianRunner):
                    runner.product_s.clear()
                CLOCK.seconds = 0.0
                t0 = time.perf_counter()
                for _ in range(steps[key]):
                    runner.step()
                _sync(device)
            except Exception as exc:  # noqa: BLE001 (reported in the table)
                result.errors[key] = _error(exc)
                result.times.pop(key, None)
                continue
            per_step = (time.perf_counter() - t0) / steps[key]
            if key[0] == "fairmtl" and uses_jacobian(key, workload.k):
                result.times.setdefault((IN_STEP, key[1]), []).append(CLOCK.seconds / steps[key])
            if isinstance(runner, JacobianRunner):
                result.times.setdefault(GRAM_KEY, []).append(sum(runner.product_s) / steps[key])
            result.times.setdefault(key, []).append(per_step)
            if cuda:
                peak = (torch.cuda.max_memory_allocated(device) - base) / 2**20
                result.memory_mib[key] = max(result.memory_mib.get(key, 0.0), peak)
        print(f"[{name}] round {r + 1}/{args.rounds} done ({time.perf_counter() - start:.0f} s)",
              file=sys.stderr)  # fmt: skip
    result.seconds = time.perf_counter() - start
    del runners, workload
    gc.collect()
    if cuda:
        torch.cuda.empty_cache()
    return result


# ----------------------------------------------------------------------------------------
# solver-only comparison
# ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SolverRow:
    """One method at one K: median milliseconds of both solvers on the same matrices."""

    method: str
    k: int
    ours_ms: float
    ours_n: int
    ref_ms: float
    ref_n: int
    cosine: float
    device_ms: float | None = None


def random_grams(k: int, n: int, dim: int, rng: np.random.Generator) -> list[np.ndarray]:
    """``n`` Gram matrices ``G G^T``: K x ``dim`` Gaussian rows times ``10^U[-1, 1]``."""
    out = []
    for _ in range(n):
        g = rng.standard_normal((k, dim)) * (10.0 ** rng.uniform(-1.0, 1.0, size=k))[:, None]
        a = g @ g.T
        out.append(0.5 * (a + a.T))
    return out


def _gram_cosine(a: np.ndarray, u: np.ndarray, v: np.ndarray) -> float:
    """Cosine between the directions ``G^T u`` and ``G^T v`` from the Gram matrix."""
    uv, uu, vv = float(u @ a @ v), float(u @ a @ u), float(v @ a @ v)
    return uv / math.sqrt(uu * vv) if uu > 0 and vv > 0 else float("nan")


def _timed_calls(
    call: Callable[[int], Any], n: int, budget_s: float, sync: Callable[[], None]
) -> tuple[list[float], list[Any]]:
    """Two untimed calls, then up to ``n`` timed calls (at least 3, until ``budget_s``)."""
    for i in range(2):
        call(i)
    times: list[float] = []
    outs: list[Any] = []
    spent = 0.0
    for i in range(n):
        if i >= 3 and spent > budget_s:
            break
        sync()
        t0 = time.perf_counter()
        outs.append(call(2 + i))
        sync()
        dt = time.perf_counter() - t0
        spent += dt
        times.append(1e3 * dt)
    return times, outs


def _solver_method(name: str) -> str:
    """The fairmtl method a solver-table row times (``mgda/fw``: MGDA, another reference)."""
    return name.split("/")[0]


def _bench_solver(
    name: str, k: int, grams: Sequence[np.ndarray], repeats: int, device: torch.device
) -> SolverRow:
    """One method at one K: fairmtl's ``weights(gram)`` and the reference on ``grams``."""
    cpu = [torch.from_numpy(a) for a in grams]
    ours = fairmtl.make(_solver_method(name))
    ref = make_reference_solver(name, k)

    def ours_call(i: int) -> np.ndarray:
        return ours.weights(cpu[i]).numpy()

    def ref_call(i: int) -> np.ndarray:
        if isinstance(ref, NashReference):
            ref.reset()  # every matrix from the reference's first-step start (ones)
        return np.asarray(ref(grams[i]))

    ours_t, ours_w = _timed_calls(ours_call, repeats, SOLVER_BUDGET_S, _no_sync)
    ref_t, ref_w = _timed_calls(ref_call, repeats, SOLVER_BUDGET_S, _no_sync)
    n = min(len(ours_w), len(ref_w))
    cos = statistics.median(_gram_cosine(grams[2 + i], ours_w[i], ref_w[i]) for i in range(n))
    device_ms = None
    if device.type == "cuda":
        dev = [a.to(device) for a in cpu]

        def device_call(i: int) -> Tensor:
            return ours.weights(dev[i])

        def sync() -> None:
            torch.cuda.synchronize(device)

        dev_t, _ = _timed_calls(device_call, repeats, SOLVER_BUDGET_S, sync)
        device_ms = statistics.median(dev_t)
    return SolverRow(
        name, k, statistics.median(ours_t), len(ours_t), statistics.median(ref_t), len(ref_t),
        cos, device_ms,
    )  # fmt: skip


def bench_solvers(
    methods: Sequence[str], ks: Sequence[int], repeats: int, seed: int, device: torch.device
) -> tuple[list[SolverRow], list[str]]:
    """fairmtl's ``weights(gram)`` vs. the reference solvers on the same Gram matrices."""
    rows: list[SolverRow] = []
    errors: list[str] = []
    for k in ks:
        grams = random_grams(k, repeats + 2, SOLVER_DIM, np.random.default_rng([seed, k]))
        for name in methods:
            try:
                row = _bench_solver(name, k, grams, repeats, device)
            except Exception as exc:  # noqa: BLE001 (reported under the table)
                errors.append(f"{name} at K = {k}: {_error(exc)}")
                continue
            rows.append(row)
            print(f"[solvers] {name} K = {k}: {row.ref_ms / row.ours_ms:.1f}x", file=sys.stderr)
    return rows, errors


def _no_sync() -> None:
    return None


# ----------------------------------------------------------------------------------------
# peak memory on CPU: one subprocess per (shape, implementation, method)
# ----------------------------------------------------------------------------------------


def _maxrss_kib() -> float:
    """``getrusage(RUSAGE_SELF).ru_maxrss`` in KiB."""
    import resource

    rss = float(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    return rss / 1024.0 if sys.platform == "darwin" else rss  # bytes on macOS


def _proc_status_kib(field_name: str) -> float | None:
    """A ``/proc/self/status`` memory field (``VmHWM``, ``VmRSS``) in KiB, if there is one."""
    try:
        text = Path("/proc/self/status").read_text(encoding="ascii")
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith(field_name + ":"):
            return float(line.split()[1])
    return None


def _reset_peak_rss() -> bool:
    """Set this process's peak RSS (``VmHWM``) to its current RSS (Linux only)."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
            f.write("5")
    except OSError:
        return False
    return True


def peak_rss_kib() -> tuple[float, str]:
    """The process's peak RSS in KiB and where it was read.

    On Linux ``ru_maxrss`` of a process started by ``subprocess`` also holds the peak of
    the parent (the kernel carries it over at ``exec``) and cannot be reset, so the
    per-process ``VmHWM`` of ``/proc/self/status`` (the same high-water mark, resettable)
    is read there; elsewhere ``ru_maxrss``.
    """
    hwm = _proc_status_kib("VmHWM")
    if hwm is not None:
        return hwm, "VmHWM"
    return _maxrss_kib(), "ru_maxrss"


def memory_child(shape: str, impl: str, method: str, settings: Settings) -> dict[str, Any]:
    """Build one runner, run :data:`MEMORY_STEPS` steps; the peak RSS before and after (KiB).

    The peak is first reset to the current RSS where the platform allows it, so that the
    increase is that of the steps, not hidden under the peak of the imports and the setup.
    """
    workload = build_workload(shape, settings, torch.device("cpu"))
    runner = make_runner(workload, impl, method)
    gc.collect()
    reset = _reset_peak_rss()
    before, source = peak_rss_kib()
    for _ in range(MEMORY_STEPS):
        runner.step()
    after, _ = peak_rss_kib()
    return {"before_kib": before, "after_kib": after, "source": source, "reset": reset}


Job = tuple[str, str, str]  # (shape, implementation, method)


def _increase_mib(data: dict[str, Any]) -> float:
    return max(0.0, float(data["after_kib"]) - float(data["before_kib"])) / 1024.0


def _child_env() -> dict[str, str]:
    """The environment of a subprocess of this script: ``fairmtl`` importable."""
    src = str(Path(fairmtl.__file__).resolve().parents[1])
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH", "")) if p)
    return env


def memory_server(jobs: Sequence[Job], settings: Settings, parallel: int) -> dict[str, Any]:
    """Linux: one process of this script imports everything once, then forks a child per job.

    Each forked child is a fresh process for :func:`memory_child` (its own address space
    and peak RSS, reset after its setup) without paying the imports again; ``parallel``
    children run at a time. Runs in a subprocess that has not run any torch kernel, so no
    thread pool is forked.
    """
    # torch._dynamo: imported by the first optimizer built (about 1 s in every child)
    for module in ("fairmtl.bench.multimnist", "fairmtl.bench.celeba", "fairmtl.bench.segnet",
                   "torchjd.autojac", "torchjd.aggregation", "cvxpy", "torch._dynamo"):  # fmt: skip
        with contextlib.suppress(ImportError):
            importlib.import_module(module)
    results: dict[str, Any] = {}
    pending = list(jobs)
    running: dict[int, tuple[Job, int]] = {}
    while pending or running:
        while pending and len(running) < parallel:
            job = pending.pop(0)
            read_fd, write_fd = os.pipe()
            pid = os.fork()
            if pid == 0:  # the child: measure, report through the pipe, exit at once
                os.close(read_fd)
                code = 0
                try:
                    payload = json.dumps(memory_child(*job, settings))
                except BaseException as exc:  # noqa: BLE001 (reported to the parent)
                    payload, code = json.dumps({"error": _error(exc)}), 1
                with os.fdopen(write_fd, "w", encoding="utf-8") as f:
                    f.write(payload)
                os._exit(code)
            os.close(write_fd)
            running[pid] = (job, read_fd)
        pid, status = os.wait()
        if pid not in running:
            continue
        job, read_fd = running.pop(pid)
        with os.fdopen(read_fd, encoding="utf-8") as f:
            payload = f.read()
        key = "/".join(job)
        try:
            data = json.loads(payload)
        except json.JSONDecodeError:
            data = {"error": f"the child ended with status {status} and no result"}
        results[key] = data["error"] if "error" in data else _increase_mib(data)
    return results


def run_memory_children(
    jobs: list[Job], settings: Settings, threads: int, parallel: int
) -> dict[Job, float | str]:
    """Peak-memory increase (MiB, or an error text) of every job, each in its own process.

    On Linux through :func:`memory_server` (one subprocess, forked children); elsewhere
    one ``--memory-child`` subprocess per job, ``parallel`` at a time.
    """
    start = time.perf_counter()
    script = str(Path(__file__).resolve())
    common = ["--threads", str(threads), "--memory-jobs", str(parallel), *settings.child_args()]
    out: dict[Job, float | str] = {}
    if sys.platform.startswith("linux") and hasattr(os, "fork"):
        proc = subprocess.run(
            [sys.executable, script, "--memory-server", *common],
            input=json.dumps([list(j) for j in jobs]), capture_output=True, text=True,
            env=_child_env(), check=False,
        )  # fmt: skip
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
        results = json.loads(lines[-1]) if proc.returncode == 0 and lines else {}
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1][:120]
        for job in jobs:
            out[job] = results.get("/".join(job), f"memory server: exit {proc.returncode}: {tail}")
    else:
        pending = list(jobs)
        running: list[tuple[Job, subprocess.Popen[str]]] = []
        while pending or running:
            while pending and len(running) < parallel:
                job = pending.pop(0)
                cmd = [sys.executable, script, "--memory-child", *job, *common]
                running.append((job, subprocess.Popen(
                    cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                    env=_child_env(),
                )))  # fmt: skip
            time.sleep(0.05)
            still = []
            for job, child in running:
                if child.poll() is None:
                    still.append((job, child))
                    continue
                stdout, stderr = child.communicate()
                lines = [ln for ln in stdout.splitlines() if ln.startswith("{")]
                if child.returncode == 0 and lines:
                    out[job] = _increase_mib(json.loads(lines[-1]))
                else:
                    tail = (stderr.strip().splitlines() or ["no output"])[-1]
                    out[job] = f"exit {child.returncode}: {tail}"[:160]
            running = still
    print(f"[memory] {len(jobs)} runs ({time.perf_counter() - start:.0f} s)", file=sys.stderr)
    return out


# ----------------------------------------------------------------------------------------
# report
# ----------------------------------------------------------------------------------------


def _steps_text(steps: dict[Key, int]) -> str:
    """The steps per round of a shape, as text ("n step(s)" or "n to m steps ...")."""
    values = sorted(set(steps.values())) or [0]
    if len(values) == 1:
        return f"{values[0]} step(s)"
    return (
        f"{values[0]} to {values[-1]} steps (per runner: enough for a round of "
        f"{ROUND_SECONDS:g} s after its warm-up step)"
    )


def _ms(v: float | None) -> str:
    if v is None:
        return "-"
    if v >= 100:
        return f"{v:.0f}"
    if v >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def _ratio(num: float | None, den: float | None) -> str:
    if num is None or den is None or den <= 0:
        return "-"
    return f"{num / den:.2f}"


def _mib(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f}"


def shape_table(res: ShapeResult, methods: Sequence[str]) -> str:
    """The per-shape Markdown table (times in ms, ratios, memory in MiB)."""
    head = [
        "method", "fairmtl (ms)", "÷ LS", "features ÷ LS", "TorchJD (ms)", "fairmtl ÷ TorchJD",
        "reference (ms)", "fairmtl ÷ reference", "memory (MiB)", "memory ÷ LS",
        "features memory (MiB)", "TorchJD memory (MiB)", "reference memory (MiB)",
    ]  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    ls = res.median_ms(("fairmtl", "ls"))
    ls_mem = res.memory_mib.get(("fairmtl", "ls"))
    mem_base = ls_mem if ls_mem is not None and ls_mem >= 1.0 else None

    def cell(key: Key, text: str) -> str:
        return "error" if key in res.errors else text

    def mem_cell(key: Key, text: str) -> str:
        return "error" if key in res.memory_errors else cell(key, text)

    for m in methods:
        ours, feat, tjd, ref = (("fairmtl", m), ("features", m), ("torchjd", m), ("reference", m))
        t_ours, t_feat = res.median_ms(ours), res.median_ms(feat)
        t_tjd, t_ref = res.median_ms(tjd), res.median_ms(ref)
        mem = res.memory_mib.get(ours)
        cells = [
            m,
            cell(ours, _ms(t_ours)),
            cell(ours, _ratio(t_ours, ls)),
            cell(feat, _ratio(t_feat, ls)),
            cell(tjd, _ms(t_tjd)),
            cell(tjd, _ratio(t_ours, t_tjd)),
            cell(ref, _ms(t_ref)),
            cell(ref, _ratio(t_ours, t_ref)),
            mem_cell(ours, _mib(mem)),
            mem_cell(ours, _ratio(mem, mem_base)),
            mem_cell(feat, _mib(res.memory_mib.get(feat))),
            mem_cell(tjd, _mib(res.memory_mib.get(tjd))),
            mem_cell(ref, _mib(res.memory_mib.get(ref))),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def solver_table(rows: Sequence[SolverRow]) -> str:
    with_device = any(r.device_ms is not None for r in rows)
    head = [
        "method", "K", "fairmtl weights(gram) (ms)", "reference (ms)", "speed-up",
        "direction cosine", "calls (fairmtl / reference)",
    ]  # fmt: skip
    if with_device:
        head.append("fairmtl on the device (ms)")
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    for r in rows:
        cells = [
            r.method, str(r.k), f"{r.ours_ms:.4g}", f"{r.ref_ms:.4g}",
            f"{r.ref_ms / r.ours_ms:.3g}x", f"{r.cosine:.6f}", f"{r.ours_n} / {r.ref_n}",
        ]  # fmt: skip
        if with_device:
            cells.append("-" if r.device_ms is None else f"{r.device_ms:.3f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


FloorRow = tuple[str, float, float, float, float | None]


def floor_rows(res: ShapeResult, methods: Sequence[str]) -> list[FloorRow]:
    """``(method, T_step ms, in-step T_jac ms, fraction outside the Jacobian, fraction of
    the step that the Gram matrix J J^T takes)`` on a shape; the fraction is the median
    over rounds of ``(T_step - T_jac) / T_step``, both timed in the same steps."""
    t_gram = res.median_ms(GRAM_KEY)
    out: list[FloorRow] = []
    for m in methods:
        if not needs_jacobian(m, res.k):
            continue
        steps, inside = res.times.get(("fairmtl", m)), res.times.get((IN_STEP, m))
        if not steps or not inside or len(steps) != len(inside):
            continue
        t = 1e3 * statistics.median(steps)
        frac = statistics.median((a - b) / a for a, b in zip(steps, inside))
        gram = None if t_gram is None else t_gram / t
        out.append((m, t, 1e3 * statistics.median(inside), frac, gram))
    return out


def floor_table(rows: Sequence[FloorRow]) -> str:
    head = [
        "method", "step (ms)", "T_jac in the step (ms)", "outside the Jacobian",
        "of which J J^T", "target <= 5 %",
    ]  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    for m, t, tj, frac, gram in rows:
        ok = "yes" if frac <= TARGET_FLOOR else "no"
        g = "-" if gram is None else f"{100 * gram:.1f} %"
        lines.append(f"| {m} | {_ms(t)} | {_ms(tj)} | {100 * frac:.1f} % | {g} | {ok} |")
    return "\n".join(lines)


def _names(items: Sequence[str]) -> str:
    return ", ".join(items) if items else "none"


def _paired(
    res: ShapeResult, impl_a: str, impl_b: str, methods: Sequence[str]
) -> list[tuple[str, float, float]]:
    """``(method, ms of impl_a, ms of impl_b)`` for the methods where both were timed."""
    out = []
    for m in methods:
        a, b = res.median_ms((impl_a, m)), res.median_ms((impl_b, m))
        if a is not None and b is not None:
            out.append((m, a, b))
    return out


def _ls_noise(res: ShapeResult) -> float | None:
    """``|T_a / T_b - 1|`` for two runners of the same LS step (fairmtl's and the
    reference's): a gauge of the run-to-run noise of a shape's step times."""
    a, b = res.median_ms(("fairmtl", "ls")), res.median_ms(("reference", "ls"))
    if a is None or b is None or b <= 0:
        return None
    return abs(a / b - 1.0)


def notes(
    results: Sequence[ShapeResult],
    methods: Sequence[str],
    solver_rows: Sequence[SolverRow],
    floors: Sequence[FloorRow],
    args: argparse.Namespace,
) -> list[str]:
    """Which targets are met (computed from the measurements) and how to read the tables."""
    out: list[str] = []
    # features mode
    for res in results:
        ls = res.median_ms(("fairmtl", "ls"))
        feats = [(m, t) for m, t, _ in _paired(res, "features", "features", methods)]
        if not feats or ls is None:
            continue
        base: float = ls
        bad = [f"{m} ({t / base:.2f})" for m, t in feats if t / base > TARGET_FEATURES]
        verdict = "met by all" if not bad else f"missed by {_names(bad)}"
        out.append(
            f"Features mode on {res.name} (target <= {TARGET_FEATURES:g} x LS): {verdict} "
            f"({len(feats) - len(bad)} of {len(feats)} within)."
        )
    # solvers
    k_max = max((r.k for r in solver_rows), default=None)
    if k_max is not None:
        at = [r for r in solver_rows if r.k == k_max]
        ok = [f"{r.method} ({r.ref_ms / r.ours_ms:.0f}x)" for r in at
              if r.ref_ms / r.ours_ms >= TARGET_SPEEDUP]  # fmt: skip
        bad = [f"{r.method} ({r.ref_ms / r.ours_ms:.1f}x)" for r in at
               if r.ref_ms / r.ours_ms < TARGET_SPEEDUP]  # fmt: skip
        target = "" if k_max == 40 else " (K = 40 was not run: shown for the largest K)"
        out.append(
            f"Solver speed-up at K = {k_max} (target >= {TARGET_SPEEDUP:g}x){target}: "
            f"met by {_names(ok)}; missed by {_names(bad)}."
        )
        off_rows = [r for r in solver_rows if not r.cosine > 0.999]
        if off_rows:
            text = (
                "The reference does not reach the exact direction for "
                + ", ".join(f"{r.method} at K = {r.k} ({r.cosine:.3f})" for r in off_rows)
                + " (direction cosine below 0.999)."
            )
            if any(r.method == "nash-mtl" for r in off_rows):
                text += (
                    " Nash-MTL: the reference's convex subproblem can be unbounded (cvxpy "
                    "returns no solution), after which it keeps its previous weights, as the "
                    "original code does; its time is then that of a failed solve."
                )
            if any(r.method.startswith("mgda") for r in off_rows):
                text += (
                    " MGDA: both of Sener & Koltun's solvers stop on their 1e-5 step "
                    "criterion before the optimum, and clip the end points of their line "
                    "search to 0.999 / 0.001."
                )
            out.append(text)
    # Jacobian floor
    if floors:
        ok = [f"{m} ({100 * f:.1f} %)" for m, _, _, f, _ in floors if f <= TARGET_FLOOR]
        bad = [f"{m} ({100 * f:.1f} %)" for m, _, _, f, _ in floors if f > TARGET_FLOOR]
        grams = [g for *_, g in floors if g is not None]
        out.append(
            f"Jacobian floor on celeba (target <= {100 * TARGET_FLOOR:g} % outside the "
            f"Jacobian): met by {_names(ok)}; missed by {_names(bad)}."
        )
        if grams:
            out.append(
                f"Of the time outside the Jacobian, the Gram matrix J J^T alone (one "
                f"(K, m) x (m, K) product, which every Gramian weighting needs) takes "
                f"{100 * statistics.median(grams):.1f} % of the step (median over the "
                "methods; the product timed alone, after the Jacobian of a separate runner); "
                "the solvers, J^T w, the heads' backward pass and Adam's step share the rest."
            )
    # TorchJD and reference
    for res in results:
        pairs = _paired(res, "fairmtl", "torchjd", methods)
        if pairs:
            faster = sum(1 for _, a, b in pairs if a < b)
            slower = [f"{m} ({a / b:.2f})" for m, a, b in pairs if a > 1.1 * b]
            text = (
                f"fairmtl vs. TorchJD on {res.name}: fairmtl faster for {faster} of "
                f"{len(pairs)} methods; more than 10 % slower for {_names(slower)}."
            )
            behind = [f"{m} ({a / b:.2f})" for m, a, b in pairs if a >= b]
            noise = _ls_noise(res)
            if behind and noise is not None:
                text += (
                    f" Not faster: {_names(behind)}; for scale, the same LS step timed by two "
                    f"runners (fairmtl's and the reference's) differed by {100 * noise:.0f} %."
                )
            out.append(text)
        refs = _paired(res, "fairmtl", "reference", [m for m in methods if m != "ls"])
        if refs:
            text = ", ".join(f"{m} {b / a:.2f}x" for m, a, b in refs)
            out.append(f"Reference step time ÷ fairmtl's on {res.name}: {text}.")
    for res in results:
        if res.unwarmed:
            out.append(
                f"On {res.name}, {len(res.unwarmed)} runners that compute the Jacobian skipped "
                f"their warm-up step, because one of the same implementation had taken more than "
                f"{SLOW_STEP_S:g} s per step: their first timed round is their warm-up, which the "
                f"median over {res.rounds} rounds leaves out."
            )
    errors = [
        f"{res.name} / {impl} / {m}: {text}" for res in results
        for (impl, m), text in res.errors.items()
    ] + [
        f"{res.name} / {impl} / {m} (memory run): {text}" for res in results
        for (impl, m), text in res.memory_errors.items()
    ]  # fmt: skip
    if errors:
        out.append("Failed runs (shown as 'error'): " + "; ".join(errors) + ".")
    if not results:  # --solvers-only: the notes below explain the shape tables
        return out
    memory = (
        "Memory: CUDA peak allocated during the timed steps minus the memory allocated "
        "before them (max over rounds)."
        if args.device_obj.type == "cuda"
        else "Memory: increase of the process's peak RSS (ru_maxrss; VmHWM on Linux, reset "
        f"after setup) over {MEMORY_STEPS} steps, in a fresh subprocess per row after setup "
        "(model, batch and method built); it includes Adam's state and the allocator's own "
        "growth; rows of a few MiB are within the allocator's noise."
    )
    out += [
        memory,
        (
            "Columns: ÷ LS is the median step time over fairmtl's LS step (the same single "
            "backward for every implementation); fairmtl ÷ TorchJD and fairmtl ÷ reference "
            "below 1 mean fairmtl is faster; '-' = not applicable or not run."
        ),
        (
            "TorchJD gets fairmtl's hyperparameters where both have them (FairGrad alpha 2, "
            "CAGrad c 0.4, GradVac beta 0.01, Aligned-MTL scale mode 'min'), its defaults "
            "otherwise (MGDA epsilon 1e-3 / 100 iterations; Nash-MTL 20 iterations, "
            "update_weights_every 1, max_norm 1). fairmtl's Nash-MTL is FairGrad with "
            "alpha 1 solved exactly; the references' Nash-MTL is the cvxpy sequential convex "
            "approximation."
        ),
        (
            "Losses are simple means (cross-entropy, BCE, NLL, L1, cosine) on random inputs "
            "and targets: the step time does not depend on the exact loss. All runners of a "
            "shape share one model and one Adam optimizer; each method keeps its own state."
        ),
    ]
    epochs = EPOCH_STEPS + EPOCH_SKIP + 1
    text = (
        f"Loss-balancing methods first run {EPOCH_STEPS} one-step epochs, then skip to epoch "
        f"{epochs}, so that epoch-based methods (DWA, IGB) time their steady phase."
    )
    if "igbv2" in methods:
        where = "the warm-up" if args.warmup >= 1 else "the first timed round"
        text += (
            f" IGBv2 trains its SAC agent every 50 steps, first at its first step of epoch "
            f"{epochs}, which falls in {where}: the median is that of its other steps "
            "(the amortised round is not included)."
        )
    out.append(text)
    return out


RESULTS_HEADING = "## Results"


def embed_report(previous: str | None, report: str) -> str:
    """The text to write to ``--out``: the report, under the file's ``## Results`` heading.

    When the file already has a line ``## Results`` (``docs/speed.md``: the explanation
    above it), everything up to that line is kept and the report replaces what followed,
    its title dropped and its headings one level deeper; otherwise the report alone.
    """
    if previous is None:
        return report
    lines = previous.splitlines()
    if RESULTS_HEADING not in (ln.rstrip() for ln in lines):
        return report
    cut = next(i for i, ln in enumerate(lines) if ln.rstrip() == RESULTS_HEADING)
    body = report.splitlines()
    if body and body[0].startswith("# "):
        body = body[1:]
    body = ["#" + ln if ln.startswith("#") else ln for ln in body]
    return "\n".join([*lines[: cut + 1], *body]).rstrip("\n") + "\n"


def _load_average() -> str:
    try:
        return f"{os.getloadavg()[0]:.2f}"
    except (AttributeError, OSError):
        return "n/a"


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def header(argv: Sequence[str], args: argparse.Namespace, load_before: str, load_after: str,
           settings: Settings, wall: str) -> str:  # fmt: skip
    cmd = shlex.join(["python", "benchmarks/speed_suite.py", *argv])
    date = _dt.datetime.now().astimezone().isoformat(timespec="seconds")
    dev = args.device_obj
    device = (
        f"CUDA {torch.cuda.get_device_name(dev)}" if dev.type == "cuda" else f"CPU {_cpu_name()}"
    )
    versions = ", ".join(
        f"{d} {_version(d)}" for d in ("torch", "numpy", "scipy", "cvxpy", "torchjd", "ecos")
    )
    h, w = settings.segnet_size
    return (
        "# Speed suite: step time and memory of every method, relative to LS\n\n"
        f"Command: `PYTHONPATH=src {cmd}`  \n"
        f"fairmtl {fairmtl.__version__}, {versions}, Python {platform.python_version()}  \n"
        f"Device: {device}; CPUs: {os.cpu_count()}; torch threads: {args.threads_used} "
        f"(solver-only part: {args.solver_threads}); BLAS threads: {_blas_note()}  \n"
        + (
            "Shapes: none (--solvers-only)  \n"
            if not args.shapes
            else f"Shapes: lenet batch {settings.lenet_batch}; celeba batch {settings.celeba_batch}; "
            f"segnet batch {settings.segnet_batch} at {h} x {w}, width / "
            f"{settings.segnet_width_div}; rounds {args.rounds}, warm-up steps {args.warmup}  \n"
        )
        + f"1-minute load average before / after the timing: {load_before} / {load_after}; "
        f"wall time: {wall}  \n"
        f"Date: {date}\n"
    )


# ----------------------------------------------------------------------------------------
# command line
# ----------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    p.add_argument("--shapes", nargs="+", choices=SHAPES, default=list(SHAPES))
    p.add_argument("--methods", nargs="+", default=None, help="registered names (default: all)")
    p.add_argument("--rounds", type=int, default=3, help="interleaved timed rounds (median)")
    p.add_argument("--steps", type=int, default=None,
                   help="steps per round (default: per runner, a round of >= 0.2 s, 1 to 20)")  # fmt: skip
    p.add_argument("--warmup", type=int, default=1, help="untimed steps per runner")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads for the steps (default 1 on CPU, torch's on CUDA)")  # fmt: skip
    p.add_argument("--solver-threads", type=int, default=1, help="torch threads, solver part")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    p.add_argument("--out", type=Path, default=None, help="write the Markdown report here")
    p.add_argument("--no-torchjd", dest="torchjd", action="store_false")
    p.add_argument("--no-reference", dest="reference", action="store_false")
    p.add_argument("--no-memory", dest="memory", action="store_false")
    p.add_argument("--no-solvers", dest="solvers", action="store_false")
    p.add_argument(
        "--solvers-only",
        action="store_true",
        help="only the solver table (no shape, no memory run)",
    )
    p.add_argument("--lenet-batch", type=int, default=256)
    p.add_argument("--celeba-batch", type=int, default=None, help="default 16 (CUDA), 2 (CPU)")
    p.add_argument("--segnet-batch", type=int, default=2)
    p.add_argument("--segnet-size", type=int, nargs=2, default=[64, 96], metavar=("H", "W"))
    p.add_argument("--segnet-width-div", type=int, default=None,
                   help="divide SegNet's channels (default 1 on CUDA, 8 on CPU)")  # fmt: skip
    p.add_argument("--solver-ks", type=int, nargs="+", default=[2, 10, 40])
    p.add_argument("--solver-repeats", type=int, default=20, help="timed calls per solver and K")
    p.add_argument("--memory-jobs", type=int, default=2, help="memory subprocesses at a time")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--memory-child", nargs=3, default=None, metavar=("SHAPE", "IMPL", "METHOD"),
                   help=argparse.SUPPRESS)  # fmt: skip
    p.add_argument("--memory-server", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    positive = [args.rounds, args.lenet_batch, args.segnet_batch, args.solver_repeats,
                args.memory_jobs, args.solver_threads, *args.solver_ks]  # fmt: skip
    for opt in (args.steps, args.threads, args.celeba_batch, args.segnet_width_div):
        if opt is not None:
            positive.append(opt)
    if min(positive) < 1 or args.warmup < 0:
        p.error("counts, batch sizes, threads and K must be positive; --warmup non-negative")
    if args.celeba_batch is not None and args.celeba_batch < 2:
        p.error("--celeba-batch must be at least 2 (BatchNorm)")
    h, w = args.segnet_size
    if h % 32 or w % 32:
        p.error("--segnet-size H W must be multiples of 32")
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda but CUDA is not available")
    args.device_obj = device
    return args


def settings_from(args: argparse.Namespace) -> Settings:
    cuda = args.device_obj.type == "cuda"
    return Settings(
        lenet_batch=args.lenet_batch,
        celeba_batch=args.celeba_batch or (16 if cuda else 2),
        segnet_batch=args.segnet_batch,
        segnet_size=(args.segnet_size[0], args.segnet_size[1]),
        segnet_width_div=args.segnet_width_div or (1 if cuda else 8),
        seed=args.seed,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the suite, print the report and write it to ``--out``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    settings = settings_from(args)
    threads = args.threads or (1 if args.device_obj.type == "cpu" else None)
    if threads is not None:
        torch.set_num_threads(threads)
    args.threads_used = torch.get_num_threads()
    if args.memory_child is not None:
        shape, impl, method = args.memory_child
        print(json.dumps(memory_child(shape, impl, method, settings)))
        return 0
    if args.memory_server:
        jobs: list[Job] = [(a, b, c) for a, b, c in json.loads(sys.stdin.read())]
        print(json.dumps(memory_server(jobs, settings, args.memory_jobs)))
        return 0
    methods = method_names(args.methods)
    if args.solvers_only:
        args.shapes, args.memory, args.solvers = [], False, True
    if args.torchjd and not torchjd_available():
        print("torchjd is not installed: --no-torchjd", file=sys.stderr)
        args.torchjd = False
    device = args.device_obj

    load_before = _load_average()
    start = time.perf_counter()
    with blas_threads(args.threads_used):
        CLOCK.install()
        try:
            results = [time_shape(s, settings, device, methods, args) for s in args.shapes]
        finally:
            CLOCK.uninstall()

    solver_rows: list[SolverRow] = []
    solver_errors: list[str] = []
    if args.solvers:
        threads = torch.get_num_threads()
        torch.set_num_threads(args.solver_threads)
        try:
            with blas_threads(args.solver_threads):
                solver_rows, solver_errors = bench_solvers(
                    [m for m in SOLVER_METHODS if _solver_method(m) in methods], args.solver_ks,
                    args.solver_repeats, args.seed, device,
                )  # fmt: skip
        finally:
            torch.set_num_threads(threads)
    load_after = _load_average()
    wall = f"timing {time.perf_counter() - start:.0f} s"

    if args.memory and device.type == "cpu":
        start = time.perf_counter()
        jobs = [
            (res.name, impl, m) for res in results for (impl, m) in res.times
            if impl in IMPLS
        ]  # fmt: skip
        measured = run_memory_children(jobs, settings, args.threads_used, args.memory_jobs)
        by_shape = {res.name: res for res in results}
        for (shape, impl, m), value in measured.items():
            if isinstance(value, str):
                by_shape[shape].memory_errors[(impl, m)] = value
            else:
                by_shape[shape].memory_mib[(impl, m)] = value
        wall += f", memory {time.perf_counter() - start:.0f} s"

    parts = [header(argv, args, load_before, load_after, settings, wall)]
    for res in results:
        parts.append(
            f"## {res.name}\n\n{res.description}. Median over {res.rounds} interleaved rounds "
            f"of {_steps_text(res.steps)}; this shape took {res.seconds:.0f} s.\n\n"
            + shape_table(res, methods)
        )
    if args.solvers:
        text = (
            "## Solver only: weights(gram) vs. the reference solvers\n\n"
            f"Float64 Gram matrices of K x {SOLVER_DIM} Gaussian rows with per-task scales "
            f"10^U[-1, 1] (seed {args.seed}); median over the calls; torch threads "
            f"{args.solver_threads}. Direction cosine: median cosine between the two "
            "directions G^T w (1 = the same direction).\n\n" + solver_table(solver_rows)
        )
        if solver_errors:
            text += "\n\nFailed: " + "; ".join(solver_errors)
        parts.append(text)
    celeba = next((r for r in results if r.name == "celeba"), None)
    floors = floor_rows(celeba, methods) if celeba is not None else []
    if celeba is not None:
        parts.append(
            "## Jacobian floor (celeba)\n\n(T_step - T_jac) / T_step (median over rounds), "
            "T_jac = the forward pass, the losses and the Balancer's Jacobian call, timed "
            "inside the same steps; J J^T = the Gram product alone, timed by a separate "
            "runner after its own Jacobian.\n\n" + floor_table(floors)
        )
    parts.append("## Notes\n\n" + "\n".join(f"- {n}" for n in notes(
        results, methods, solver_rows, floors, args)))  # fmt: skip
    text = "\n\n".join(parts) + "\n"
    print(text)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        previous = args.out.read_text(encoding="utf-8") if args.out.is_file() else None
        args.out.write_text(embed_report(previous, text), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
