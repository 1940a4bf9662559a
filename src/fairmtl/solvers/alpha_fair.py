"""Exact solver of the alpha-fair weight equation ``A w = w^(-1/alpha)``, ``w > 0``.

FairGrad (Ban & Ji, 2024, eq. 4) and Nash-MTL (Navon et al., 2022, alpha = 1) both pick
the update ``d = G w`` whose weights solve this K-dimensional equation. It is the
stationarity condition of the strictly convex potential

    f(w) = 0.5 w^T A w - sum_i phi(w_i),   phi(w) = w^(1 - 1/alpha) / (1 - 1/alpha)
                                           (phi = log at alpha = 1),

whose Hessian ``A + diag(w^(-1/alpha - 1) / alpha)`` is positive definite on w > 0.
We minimise ``f`` by damped Newton with a per-component fraction-to-the-boundary rule
and an Armijo backtracking. On accelerators every candidate step is evaluated at once,
so an iteration has no data-dependent branch and no host round trip; on the CPU, where
reading a number costs nothing, the same iteration takes its decisions on the host and
does less work (see ``check_every``). Large alpha is reached by continuation.

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

import functools
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
_FULL_STEP_TOL = 1e-7  # a full Newton step this small (relative) leaves an error ~1e-14
_NEAR_STEP = 1e-5  # after a full step this small, test the residual
_IPM_STATIONARY = 1e-12
_STATIONARY = 1e-15  # u^T A u / max diag(A) below this: numerically Pareto stationary
_SLACK = 1e-13
_N_STEPS = 20  # backtracking candidates 1, 1/4, ..., 4^-19
_BACKTRACK = 0.25
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


def _potential2(v: Tensor, a_hat: Tensor, b2: Tensor, alpha: float) -> tuple[Tensor, Tensor]:
    """Twice the potential, split as (v^T A v, 2 sum_i b_i phi(v_i)), for points v (..., K).

    ``b2`` is ``2 b`` at alpha = 1 and ``2 b / (1 - 1/alpha)`` otherwise.
    """
    if v.ndim == 1:
        quad = torch.dot(v, torch.mv(a_hat, v))
    else:
        quad = torch.matmul(v, a_hat).mul_(v).sum(-1)
    phi = torch.log(v) if alpha == 1.0 else torch.pow(v, 1.0 - 1.0 / alpha)
    return quad, torch.matmul(phi, b2)


@dataclass(frozen=True)
class _Scaled:
    """The scaled problem ``A' v = b * v^(-1/alpha)`` and constants used at every iteration."""

    a_hat: Tensor
    abs_a: Tensor
    a_diag: Tensor
    b: Tensor
    c: Tensor  # b / alpha
    b2: Tensor  # see _potential2
    alpha: float
    inv: float  # -1 / alpha

    @staticmethod
    def of(a_hat: Tensor, b: Tensor, alpha: float) -> _Scaled:
        b2 = 2.0 * b if alpha == 1.0 else 2.0 * b / (1.0 - 1.0 / alpha)
        return _Scaled(a_hat, a_hat.abs(), a_hat.diagonal(), b, b / alpha, b2, alpha, -1.0 / alpha)

    @functools.cached_property
    def steps(self) -> Tensor:
        """Backtracking candidates 1, 1/4, ..., 4^-19 (the batched line search; made once
        per solve, on first use)."""
        b = self.b
        return torch.pow(
            torch.full((_N_STEPS,), _BACKTRACK, dtype=b.dtype, device=b.device),
            torch.arange(_N_STEPS, dtype=b.dtype, device=b.device),
        )

    def potential2(self, v: Tensor) -> tuple[Tensor, Tensor]:
        return _potential2(v, self.a_hat, self.b2, self.alpha)

    def direction(self, v: Tensor, host_checks: bool) -> tuple[Tensor, Tensor, float | None]:
        """Gradient of the potential and the Newton direction, per-component limited.

        The Hessian ``A' + diag(c v^(-1/alpha - 1))`` is positive definite. With
        ``host_checks`` (CPU, where reading a flag costs nothing) it is factorised by
        Cholesky, which is accurate whatever the diagonal scaling, falling back to a
        Jacobi-scaled LU if Cholesky breaks down on the rounding-level negative eigenvalues
        of a singular ``A'``; without (accelerators), the LU is always used, with no sync.
        Fraction to the boundary per component: a weight may shrink at most by a factor
        1 / (1 - tau) per step, so one weight heading to zero (an inactive task at large
        alpha) cannot throttle the others. If clipping spoils descent, the whole Newton
        step is shortened to the boundary instead.

        Returns ``(grad, delta, max_i |delta_i / v_i|)``, the last only with
        ``host_checks`` and an unlimited step (else ``None``).
        """
        vp = torch.pow(v, self.inv)
        grad = torch.addcmul(torch.mv(self.a_hat, v), self.b, vp, value=-1.0)
        hd = torch.mul(self.c, vp).div_(v)
        h = torch.diag_embed(hd).add_(self.a_hat)
        delta = None
        if host_checks:
            chol, info = torch.linalg.cholesky_ex(h)
            if int(info) == 0:
                delta = torch.cholesky_solve(grad.neg().unsqueeze(1), chol).squeeze(1)
        if delta is None:
            sc = torch.add(self.a_diag, hd).rsqrt_()
            h.mul_(torch.outer(sc, sc))
            delta = torch.linalg.solve_ex(h, torch.mul(grad, sc).neg_())[0].mul_(sc)
        ratio = torch.div(delta, v)
        if host_checks:
            low, high = (x.item() for x in torch.aminmax(ratio))
            if low >= -_TAU:
                return grad, delta, max(-low, high)  # no weight shrinks too fast
        ratio_min = ratio.min()
        clipped = torch.maximum(delta, torch.mul(v, -_TAU))
        shrink = ratio_min.neg().clamp_min_(_TAU)
        delta = torch.where(
            torch.dot(grad, clipped) < 0, clipped, delta.mul_(shrink.reciprocal_().mul_(_TAU))
        )
        return grad, delta, None

    def slack(self, v: Tensor, phis: Tensor) -> Tensor:
        """Rounding allowance on 2f: relative to v^T |A'| v, not to the cancelled v^T A' v."""
        return torch.dot(v, torch.mv(self.abs_a, v)).add_(phis.abs()).mul_(_SLACK)


def _line_search_batched(
    p: _Scaled, v: Tensor, grad: Tensor, delta: Tensor, quad: Tensor, phis: Tensor
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Armijo backtracking with every candidate step 1, 1/4, ..., 4^-19 evaluated at once and
    the first acceptable one selected on the device: no host round trip (accelerators).
    Returns (v, quad, phis, relative step size + index of the step taken)."""
    steps = p.steps
    cand = torch.addcmul(v, steps.unsqueeze(1), delta)
    quad_c, phis_c = p.potential2(cand)
    bound = torch.addcmul(
        quad - phis + p.slack(v, phis), steps, torch.dot(grad, delta), value=2 * _ARMIJO
    )
    ok = torch.le(quad_c - phis_c, bound)
    ok[-1] = True
    first = ok.to(torch.uint8).argmax()
    v_new = cand[first]
    rel = torch.sub(v_new, v).abs_().div_(v).max().add_(first)
    return v_new, quad_c[first], phis_c[first], rel


def _line_search_sequential(
    p: _Scaled,
    v: Tensor,
    grad: Tensor,
    delta: Tensor,
    phis: Tensor,
    f0: float,
    ratio: float | None,
) -> tuple[Tensor, Tensor, float, float]:
    """The same Armijo backtracking, one candidate at a time, stopping at the first acceptable
    step (usually the full one): on the CPU a host test costs nothing and this does fewer,
    smaller operations. Same results as :func:`_line_search_batched`.

    Takes twice the potential ``f0`` at ``v`` and ``max |delta / v|`` (if known) as host
    numbers; returns ``(v, 2 sum b phi at v, twice the potential at v, relative step size +
    index of the step taken)``."""
    slope = 2 * _ARMIJO * float(torch.dot(grad, delta))
    slack = None  # needed only near convergence, where the decrease drowns in rounding
    t = 1.0
    for j in range(_N_STEPS):
        v_new = torch.add(v, delta, alpha=t)
        quad_n, phis_n = p.potential2(v_new)
        f_new = (quad_n - phis_n).item()
        if f_new > f0 + t * slope and slack is None:
            slack = float(p.slack(v, phis))
        if j == _N_STEPS - 1 or f_new <= f0 + t * slope + (slack or 0.0):
            break
        t *= _BACKTRACK
    if ratio is None:
        ratio = torch.div(delta, v).abs_().max().item()
    return v_new, phis_n, f_new, ratio * t + j


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

    An iteration is one Newton direction (:meth:`_Scaled.direction`) and an Armijo
    backtracking on the potential: sequential, with host-side decisions, when
    ``check_every`` is 1 (the CPU default); batched, with no data-dependent branch and no
    host round trip, otherwise (the accelerator default). Every ``check_every``
    iterations one host round trip tests convergence: a full step of relative size below
    1e-7 (quadratic convergence makes the next iterate exact to rounding), or, every 4
    iterations, a componentwise backward
    error of the scaled system or the normwise one of the unscaled system
    ``a1 w = w^(-1/alpha)`` (``w = dscale * v``) below ``tol``. (A task whose weight
    underflows, e.g. a huge gradient next to a tiny one at large alpha, can only meet the
    normwise test.)
    """
    p = _Scaled.of(a_hat, b, alpha)
    # Testing every iteration means a host round trip per iteration anyway (the default on
    # CPU, where it costs nothing): then decide on the host too. Otherwise stay sync-free.
    host = check_every == 1
    quad, phis = p.potential2(v)
    f = (quad - phis).item() if host else 0.0
    it = 0
    last_good = v
    rel_step: Tensor | float = 0.0
    while it < max_iter:
        for _ in range(check_every):
            it += 1
            grad, delta, ratio = p.direction(v, host_checks=host)
            if host:
                v, phis, f, rel_step = _line_search_sequential(p, v, grad, delta, phis, f, ratio)
            else:
                v, quad, phis, rel_step = _line_search_batched(p, v, grad, delta, quad, phis)
        rel = float(rel_step)  # not finite if a weight over- or underflowed
        if rel <= _FULL_STEP_TOL:
            return v, it, True
        if not math.isfinite(rel):
            return last_good, it, False
        last_good = v
        # The residual tests: the componentwise one once a full step was small enough for
        # the new iterate to be nearly exact (it may save the confirming step), and both
        # every 4 iterations, for the rare cases the step test cannot meet.
        near = rel <= _NEAR_STEP
        if not near and it % 4:
            continue
        vp = v.pow(p.inv)
        cbe = ((a_hat @ v - b * vp).abs() / (p.abs_a @ v + b * vp)).max()
        if bool(cbe <= tol):
            return v, it, True
        if it % 4 == 0 and normwise_residual_error(a1, dscale * v, (dscale * v).pow(p.inv)) <= tol:
            return v, it, True
    return v, it, False


def solve_alpha_fair(
    gram: Tensor,
    alpha: float,
    *,
    tol: float = 1e-13,
    max_iter: int = 100,
    check_every: int | None = None,
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
        check_every: iterations between convergence tests (host round trips); default 1
            on CPU (where a test costs nothing) and 4 on accelerators. At 1, the line
            search and the choice of factorisation are also made on the host (faster on
            CPU); above 1 the iterations in between run without any host round trip.
        init: optional warm start (K,) of positive weights, e.g. the previous step's.

    Returns:
        :class:`AlphaFairSolution`; ``info.backward_error`` is the normwise backward
        error ``||A w - w^(-1/alpha)|| / (||A|| ||w|| + ||w^(-1/alpha)||)`` on the
        unregularised ``A``, ``info.regularization`` the ridge that had to be added.
    """
    alpha = check_alpha(alpha)
    a = check_gram(gram)
    if check_every is None:
        check_every = 1 if a.device.type == "cpu" else 4
    with torch.inference_mode():  # less dispatch overhead on these tiny tensors
        sol = _solve(a, alpha, tol, max_iter, check_every, init)
    # Outside inference mode, so the weights can enter autograd graphs.
    return AlphaFairSolution(sol.weights.clone(), sol.info)


def _solve(
    a: Tensor, alpha: float, tol: float, max_iter: int, check_every: int, init: Tensor | None
) -> AlphaFairSolution:
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
        a_rho = (
            a1
            if rho == 0.0
            else a1 + torch.diag(rho * torch.where(zero_task, torch.ones_like(d1), d1))
        )
        start = w1_init if rho == ridges[0] else None
        for stage_alpha in stages:
            stage_tol = tol if stage_alpha == alpha else _STAGE_TOL
            w1, it, ok = _solve_scaled(a_rho, stage_alpha, start, stage_tol, max_iter, check_every)
            total_it += it
            start = w1
            if not ok:
                break
        if ok and rho == 0.0 and _numerically_stationary(a_rho, w1):
            ok = False  # converged only by sending weights to infinity: regularise instead
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


def _numerically_stationary(a1: Tensor, w1: Tensor) -> bool:
    """Whether ``G w``, normalised by the weighted sum of gradient norms, is at rounding level.

    At a Pareto-stationary point, Newton "converges" in the normwise sense by sending the
    weights to infinity along a non-negative null vector of ``A``; this catches it. The
    measure ``w^T A w / (sum_i w_i ||g_i||)^2`` is invariant to per-task gradient scales.
    """
    norms = a1.diagonal().clamp_min(0.0).sqrt()
    return bool(w1 @ (a1 @ w1) <= _STATIONARY * (w1 @ norms) ** 2)


def _check_init(init: Tensor, k: int, like: Tensor) -> Tensor:
    w0 = init.detach().to(dtype=like.dtype, device=like.device)
    if w0.shape != (k,):
        raise ValueError(f"init must have shape ({k},), got {tuple(w0.shape)}")
    if not bool(torch.isfinite(w0).all() & (w0 > 0).all()):
        raise ValueError("init must hold finite positive weights")
    return w0


def _max_min_fair(a: Tensor) -> AlphaFairSolution:
    """alpha = inf: ``argmin_{w >= 0} 0.5 w^T A w - 1^T w = u / (u^T A u)`` with u MGDA's weights.

    At a Pareto-stationary point (``u^T A u = 0``) the problem is unbounded; it is then
    solved on ``A + rho diag(A)`` and reported. A task with an exactly zero gradient is
    set aside (its weight, ``1 / (rho max diag A)``, cannot change the direction) and the
    others are solved without it.
    """
    k = a.shape[0]
    diag = a.diagonal()
    scale = diag.max()
    if bool(scale <= 0):
        ones = torch.ones(k, dtype=a.dtype, device=a.device)
        return AlphaFairSolution(ones, SolverInfo(0, 0.0, 0.0, True, zero_gram=True))
    zero = diag <= 0
    if bool(zero.any()):
        rho = _RIDGES[2]
        keep = (~zero).nonzero().squeeze(1)
        sub = _max_min_fair(a[keep][:, keep])
        w = torch.full((k,), 1.0 / float(rho * scale), dtype=a.dtype, device=a.device)
        w[keep] = sub.weights
        info = sub.info
        return AlphaFairSolution(
            w,
            SolverInfo(
                info.iterations, info.backward_error, max(rho, info.regularization), info.converged
            ),
        )
    sol = min_norm_simplex(a)
    rho = 0.0
    # Pareto stationary to within the interior-point method's accuracy: regularise.
    if bool(sol.value <= _IPM_STATIONARY * scale):
        rho = _RIDGES[2]
        sol = min_norm_simplex(a + rho * torch.diag(diag))
    w = sol.weights / sol.value
    info = SolverInfo(sol.info.iterations, sol.info.backward_error, rho, sol.info.converged)
    return AlphaFairSolution(w, info)
