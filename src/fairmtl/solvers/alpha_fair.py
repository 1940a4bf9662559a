"""Exact solver of the alpha-fair weight equation ``A w = w^(-1/alpha)``, ``w > 0``.

FairGrad (Ban & Ji, 2024, eq. 4) and Nash-MTL (Navon et al., 2022, alpha = 1) both pick
the update ``d = G w`` whose weights solve this K-dimensional equation. It is the
stationarity condition of the strictly convex potential

    f(w) = 0.5 w^T A w - sum_i phi(w_i),   phi(w) = w^(1 - 1/alpha) / (1 - 1/alpha)
                                           (phi = log at alpha = 1),

whose Hessian ``A + diag(w^(-1/alpha - 1) / alpha)`` is positive definite on w > 0.
We minimise ``f`` by damped Newton with a fraction-to-the-boundary rule and a
vectorised Armijo backtracking (all candidate steps are evaluated at once, so an
iteration has no data-dependent branch and no host round trip).

Two exact changes of variable keep it well conditioned whatever the gradient scales:
``A`` is divided by its largest diagonal entry, and task ``i`` is rescaled by a power of
its gradient norm (``w_i = d_i v_i``), which turns the problem into
``A' v = b * v^(-1/alpha)`` with a near-unit diagonal ``A'``; the weights are mapped back
exactly.

At (or numerically at) a Pareto-stationary point a non-negative combination of the
gradients vanishes and the equation has no solution. The solver then adds the smallest
ridge ``rho * diag(A)`` (rho = 1e-12, 1e-10, ...) that lets Newton converge and reports
it in :class:`~fairmtl.solvers.SolverInfo`; it never returns NaN.

``alpha = inf`` is the max-min fair limit ``min 0.5 w^T A w - 1^T w, w >= 0``, solved
through the min-norm point of the simplex (its solution is ``u / (u^T A u)``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from fairmtl.solvers._gram import SolverInfo, check_gram, normwise_residual_error
from fairmtl.solvers.simplex import min_norm_simplex

_ARMIJO = 1e-4
_TAU = 0.995  # fraction to the boundary
_CONTINUATION_FROM = 8.0
_CONTINUATION_RATIO = 2.0
_STAGE_TOL = 1e-6
_SLACK = 1e-13
_TINY = 1e-300  # floor on the scaled weights, against underflow
_N_STEPS = 40  # backtracking candidates 1, 1/2, ..., 2^-39 (relative to the boundary step)
_RIDGES = (1e-12, 1e-10, 1e-8, 1e-6, 1e-4)


@dataclass(frozen=True)
class AlphaFairSolution:
    """``weights`` (K,) > 0 in float64 on the Gram matrix's device, and a diagnostic."""

    weights: Tensor
    info: SolverInfo


def check_alpha(alpha: float) -> float:
    """Validate an alpha-fairness parameter: a real number in (0, inf]."""
    try:
        value = float(alpha)
    except (TypeError, ValueError):
        raise TypeError(f"alpha must be a real number in (0, inf], got {alpha!r}") from None
    if math.isnan(value) or value <= 0:
        raise ValueError(f"alpha must be in (0, inf], got {alpha!r}")
    return value


def _potential(v: Tensor, a_hat: Tensor, b: Tensor, alpha: float) -> Tensor:
    """f(v) for a batch of points v (..., K)."""
    quad = 0.5 * ((v @ a_hat) * v).sum(-1)
    if alpha == 1.0:
        phi = torch.log(v)
    else:
        e = 1.0 - 1.0 / alpha
        phi = v.pow(e) / e
    return quad - (b * phi).sum(-1)


def _newton(
    a_hat: Tensor,
    b: Tensor,
    alpha: float,
    v: Tensor,
    a1: Tensor,
    dscale: Tensor,
    tol: float,
    max_iter: int,
    check_every: int,
) -> tuple[Tensor, int, bool]:
    """Damped Newton on the scaled potential; returns (v, iterations, converged).

    Converged means: the componentwise backward error of the scaled system, or the
    normwise one of the unscaled system ``a1 w = w^(-1/alpha)`` with ``w = dscale * v``,
    is at most ``tol``. (A task whose weight underflows, e.g. a huge gradient next to a
    tiny one at large alpha, can only meet the normwise test.)
    """
    inv = -1.0 / alpha
    steps = torch.pow(
        torch.full((_N_STEPS,), 0.5, dtype=v.dtype, device=v.device),
        torch.arange(_N_STEPS, dtype=v.dtype, device=v.device),
    )
    abs_a = a_hat.abs()
    it = 0
    last_good = v
    while it < max_iter:
        for _ in range(check_every):
            it += 1
            vp = v.pow(inv)
            grad = a_hat @ v - b * vp
            hdiag = (b / alpha) * vp / v
            h = a_hat + torch.diag(hdiag)
            s = torch.rsqrt(h.diagonal())
            delta = s * torch.linalg.solve(h * s[:, None] * s[None, :], -grad * s)
            # Fraction to the boundary per component: a weight may shrink at most by a
            # factor 1 / (1 - tau) per step. (One global step length would let a single
            # weight heading to zero, an inactive task at large alpha, throttle the rest.)
            clipped = torch.maximum(delta, -_TAU * v)
            slope_c = grad @ clipped
            delta = torch.where(slope_c < 0, clipped, delta)
            ratio = torch.where(delta < 0, -v / delta, torch.full_like(v, float("inf")))
            t_max = torch.clamp(_TAU * ratio.min(), max=1.0)
            cand = v + (t_max * steps)[:, None] * delta
            cand = cand.clamp_min(_TINY)
            f0 = _potential(v, a_hat, b, alpha)
            fc = _potential(cand, a_hat, b, alpha)
            slope = grad @ delta
            # Slack for rounding: near the solution the true decrease is below float precision.
            slack = _SLACK * (0.5 * (v @ (abs_a @ v)) + (b * vp * v).sum() * max(alpha, 1.0))
            ok = fc <= f0 + _ARMIJO * t_max * steps * slope + slack
            first = torch.where(ok.any(), ok.to(torch.int64).argmax(), torch.tensor(_N_STEPS - 1, device=v.device))
            v = cand[first]
        vp = v.pow(inv)
        res = (a_hat @ v - b * vp).abs()
        scale = abs_a @ v + b * vp
        cbe = (res / scale).max()
        nbe = normwise_residual_error(a1, dscale * v, (dscale * v).pow(inv))
        if not bool(torch.isfinite(cbe)) or not bool((v > 0).all()):
            return last_good, it, False
        last_good = v
        if bool(cbe <= tol) or nbe <= tol:
            return v, it, True
    return v, it, False


def solve_alpha_fair(
    gram: Tensor,
    alpha: float,
    *,
    tol: float = 1e-13,
    max_iter: int = 100,
    check_every: int = 4,
    init: Tensor | None = None,
) -> AlphaFairSolution:
    """Solve ``A w = w^(-1/alpha)`` for ``w > 0`` (FairGrad eq. 4; Nash-MTL at alpha = 1).

    Args:
        gram: (K, K) symmetric PSD Gram matrix ``A = G^T G`` of the task gradients.
        alpha: fairness parameter in (0, inf]; ``math.inf`` gives the max-min fair weights.
        tol: stopping tolerance on the componentwise backward error
            ``max_i |A w - w^(-1/alpha)|_i / (|A| w + w^(-1/alpha))_i`` (which bounds the
            normwise one by ``sqrt(K) * tol``).
        max_iter: Newton iterations per attempt.
        check_every: iterations between convergence tests (host round trips).
        init: optional warm start (K,) of positive weights, e.g. the previous step's.

    Returns:
        :class:`AlphaFairSolution`; ``info.backward_error`` is the normwise backward
        error ``||A w - w^(-1/alpha)|| / (||A|| ||w|| + ||w^(-1/alpha)||)`` on the
        unregularised ``A``, ``info.regularization`` the ridge that had to be added.
    """
    alpha = check_alpha(alpha)
    a = check_gram(gram)
    k = a.shape[0]
    if math.isinf(alpha):
        return _max_min_fair(a)
    diag = a.diagonal().clamp_min(0.0)
    dmax = diag.max()
    if bool(dmax <= 0):
        ones = torch.ones(k, dtype=a.dtype, device=a.device)
        return AlphaFairSolution(ones, SolverInfo(0, 0.0, 0.0, True, zero_gram=True))
    a1 = a / dmax
    d1 = diag / dmax
    zero_task = d1 <= 0
    out_scale = dmax.pow(-alpha / (alpha + 1.0))

    ridges = (0.0,) + _RIDGES if not bool(zero_task.any()) else _RIDGES
    w1_init = None if init is None else _check_init(init, k, a) / out_scale
    # Large alpha is a barrier-like problem (inactive tasks' weights are ~ c^(-alpha));
    # reach it by continuation from a moderate alpha, warm-starting each stage.
    stages = [alpha]
    while stages[0] > _CONTINUATION_FROM and w1_init is None:
        stages.insert(0, max(stages[0] / _CONTINUATION_RATIO, _CONTINUATION_FROM))
    total_it = 0
    w1 = torch.ones_like(d1)
    ok = False
    for rho in ridges:
        a_rho = a1 + torch.diag(rho * torch.where(zero_task, torch.ones_like(d1), d1))
        start = w1_init if rho == ridges[0] else None
        for stage_alpha in stages:
            stage_tol = tol if stage_alpha == alpha else _STAGE_TOL
            w1, it, ok = _solve_scaled(a_rho, stage_alpha, start, stage_tol, max_iter, check_every)
            total_it += it
            start = w1
            if not ok:
                break
        if ok:
            w = out_scale * w1
            berr = normwise_residual_error(a, w, w.pow(-1.0 / alpha))
            return AlphaFairSolution(w, SolverInfo(total_it, berr, rho, True))
    w = out_scale * w1
    berr = normwise_residual_error(a, w, w.pow(-1.0 / alpha))
    return AlphaFairSolution(w, SolverInfo(total_it, berr, ridges[-1], False))


def _solve_scaled(
    a1: Tensor, alpha: float, init: Tensor | None, tol: float, max_iter: int, check_every: int
) -> tuple[Tensor, int, bool]:
    """Solve ``a1 w = w^(-1/alpha)`` for a Gram matrix with max diagonal ~1 and no zero
    diagonal entry, after the per-task change of variable ``w = dscale * v``."""
    # Per-task rescaling exponent: unit diagonal (p = 1) unless alpha < 1/2, where the
    # right-hand side weights b = d^(1 - 1/alpha) would span too many decades.
    p = 1.0 if alpha >= 0.5 else alpha / (1.0 - alpha)
    dscale = a1.diagonal().sqrt().pow(-p)
    a_hat = a1 * dscale[:, None] * dscale[None, :]
    b = dscale.pow(1.0 - 1.0 / alpha)
    if init is not None:
        v0 = init / dscale
    else:
        v0 = (b / a_hat.diagonal()).pow(alpha / (alpha + 1.0))
    v, it, ok = _newton(a_hat, b, alpha, v0, a1, dscale, tol, max_iter, check_every)
    return dscale * v, it, ok


def _check_init(init: Tensor, k: int, like: Tensor) -> Tensor:
    w0 = init.detach().to(dtype=like.dtype, device=like.device)
    if w0.shape != (k,):
        raise ValueError(f"init must have shape ({k},), got {tuple(w0.shape)}")
    if not bool(torch.isfinite(w0).all() & (w0 > 0).all()):
        raise ValueError("init must hold finite positive weights")
    return w0


def _max_min_fair(a: Tensor) -> AlphaFairSolution:
    """alpha = inf: ``argmin_{w >= 0} 0.5 w^T A w - 1^T w = u / (u^T A u)`` with u MGDA's weights."""
    sol = min_norm_simplex(a)
    k = a.shape[0]
    if sol.info.zero_gram:
        return AlphaFairSolution(sol.weights * k, sol.info)
    scale = a.diagonal().max()
    rho = 0.0
    value = sol.value
    weights = sol.weights
    if bool(value <= 1e-13 * scale):
        # Pareto stationary: the quadratic is unbounded below on w >= 0; regularise.
        rho = _RIDGES[2]
        diag = a.diagonal()
        sol = min_norm_simplex(a + rho * torch.diag(torch.where(diag > 0, diag, scale)))
        weights, value = sol.weights, sol.value
    w = weights / value
    info = SolverInfo(sol.info.iterations, sol.info.backward_error, rho, sol.info.converged)
    return AlphaFairSolution(w, info)
