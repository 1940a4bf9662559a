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

from fairmtl.solvers._gram import (
    SolverInfo,
    check_gram_diagonal,
    cholesky_apply,
    normwise_residual_error,
)
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
_KAPPA = 0.25  # see full_step_is_acceptable
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
    return quad, torch.matmul(_phi(v, alpha), b2)


def _phi(v: Tensor, alpha: float) -> Tensor:
    """``phi(v)`` of the potential, up to its constant factor (see ``b2``)."""
    return torch.log(v) if alpha == 1.0 else torch.pow(v, 1.0 - 1.0 / alpha)


@dataclass(frozen=True)
class _Scaled:
    """The scaled problem ``A' v = b * v^(-1/alpha)`` and constants used at every iteration."""

    a_hat: Tensor
    a_neg: Tensor  # -A', so that the residual is one fused op
    abs_a: Tensor
    a_diag: Tensor
    b: Tensor
    c: Tensor  # b / alpha
    b2: Tensor  # see _potential2
    alpha: float
    inv: float  # -1 / alpha

    @staticmethod
    def of(a_hat: Tensor, b: Tensor, alpha: float) -> _Scaled:
        b2 = b * (2.0 if alpha == 1.0 else 2.0 / (1.0 - 1.0 / alpha))
        return _Scaled(
            a_hat, a_hat.neg(), a_hat.abs(), a_hat.diagonal(), b, b / alpha, b2, alpha, -1.0 / alpha
        )

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

    def host_potential(self, v: Tensor) -> tuple[Tensor, Tensor, float]:
        """``(-A' v, 2 sum_i b_i phi(v_i), twice the potential)`` at one point ``v``, the
        last as a host number; ``-A' v`` is kept for :meth:`residual`."""
        nav = torch.mv(self.a_neg, v)
        phis = torch.dot(_phi(v, self.alpha), self.b2)
        return nav, phis, -(torch.dot(v, nav) + phis).item()

    def residual(self, v: Tensor, nav: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """``(v^(-1/alpha), b v^(-1/alpha) - A' v)``: the equation's residual at ``v``, minus
        the potential's gradient (given ``-A' v`` if known)."""
        vp = torch.pow(v, self.inv)
        nav = torch.mv(self.a_neg, v) if nav is None else nav
        return vp, torch.addcmul(nav, self.b, vp)

    def componentwise_error(self, v: Tensor, vp: Tensor, res: Tensor) -> Tensor:
        """``max_i |A' v - b v^(-1/alpha)|_i / (|A'| v + b v^(-1/alpha))_i`` (0-d)."""
        return res.abs().div_(torch.addcmul(torch.mv(self.abs_a, v), self.b, vp)).max()

    def direction(
        self, v: Tensor, vp: Tensor, res: Tensor, host_checks: bool
    ) -> tuple[Tensor, float | None]:
        """The Newton direction ``H^(-1) res`` at ``v`` (given :meth:`residual`),
        per-component limited.

        The Hessian ``A' + diag(c v^(-1/alpha - 1))`` is positive definite. With
        ``host_checks`` (CPU, where reading a flag costs nothing) it is factorised by
        Cholesky, which is accurate whatever the diagonal scaling, falling back to a
        Jacobi-scaled LU if Cholesky breaks down on the rounding-level negative eigenvalues
        of a singular ``A'``; without (accelerators), the LU is always used, with no sync.
        Fraction to the boundary per component: a weight may shrink at most by a factor
        1 / (1 - tau) per step, so one weight heading to zero (an inactive task at large
        alpha) cannot throttle the others. If clipping spoils descent, the whole Newton
        step is shortened to the boundary instead.

        Returns ``(delta, max_i |delta_i / v_i|)``, the last only with ``host_checks`` and
        an unlimited step (else ``None``).
        """
        hd = torch.mul(self.c, vp).div_(v)
        h = torch.diag_embed(hd).add_(self.a_hat)
        delta = None
        if host_checks:
            chol, info = torch.linalg.cholesky_ex(h)
            if int(info) == 0:
                delta = cholesky_apply(chol, res.unsqueeze(1)).squeeze(1)
        if delta is None:
            sc = torch.add(self.a_diag, hd).rsqrt_()
            h.mul_(torch.outer(sc, sc))
            delta = torch.linalg.solve_ex(h, torch.mul(res, sc))[0].mul_(sc)
        ratio = torch.div(delta, v)
        if host_checks:
            low, high = (x.item() for x in torch.aminmax(ratio))
            if low >= -_TAU:
                return delta, max(-low, high)  # no weight shrinks too fast
        ratio_min = ratio.min()
        clipped = torch.maximum(delta, torch.mul(v, -_TAU))
        shrink = ratio_min.neg().clamp_min_(_TAU)
        delta = torch.where(
            torch.dot(res, clipped) > 0, clipped, delta.mul_(shrink.reciprocal_().mul_(_TAU))
        )
        return delta, None

    def slack(self, v: Tensor, phis: Tensor) -> Tensor:
        """Rounding allowance on 2f: relative to v^T |A'| v, not to the cancelled v^T A' v."""
        return torch.dot(v, torch.mv(self.abs_a, v)).add_(phis.abs()).mul_(_SLACK)


def _line_search_batched(
    p: _Scaled, v: Tensor, res: Tensor, delta: Tensor, quad: Tensor, phis: Tensor
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Armijo backtracking with every candidate step 1, 1/4, ..., 4^-19 evaluated at once and
    the first acceptable one selected on the device: no host round trip (accelerators).
    Returns (v, quad, phis, relative step size + index of the step taken)."""
    steps = p.steps
    cand = torch.addcmul(v, steps.unsqueeze(1), delta)
    quad_c, phis_c = p.potential2(cand)
    bound = torch.addcmul(
        quad - phis + p.slack(v, phis), steps, torch.dot(res, delta), value=-2 * _ARMIJO
    )
    ok = torch.le(quad_c - phis_c, bound)
    ok[-1] = True
    first = ok.to(torch.uint8).argmax()
    v_new = cand[first]
    rel = torch.sub(v_new, v).abs_().div_(v).max().add_(first)
    return v_new, quad_c[first], phis_c[first], rel


class _Point:
    """A host-path iterate with what the next direction and the tests reuse: ``v``,
    ``-A' v``, ``v^(-1/alpha)`` and the residual ``b v^(-1/alpha) - A' v`` there (minus the
    potential's gradient). Twice the potential ``f`` (a host number) and
    ``2 sum b phi(v)`` are computed on first use (:meth:`value`), which an iterate reached
    by a full Newton step proved acceptable (:func:`full_step_is_acceptable`) may never
    need."""

    __slots__ = ("f", "nav", "phis", "res", "v", "vp")

    def __init__(self, p: _Scaled, v: Tensor, nav: Tensor | None = None) -> None:
        self.v = v
        self.nav = torch.mv(p.a_neg, v) if nav is None else nav
        self.vp, self.res = p.residual(v, self.nav)
        self.f: float | None = None
        self.phis: Tensor | None = None

    def value(self, p: _Scaled) -> tuple[float, Tensor]:
        """``(twice the potential, 2 sum_i b_i phi(v_i))`` at ``v``."""
        if self.f is None or self.phis is None:
            self.phis = torch.dot(_phi(self.v, p.alpha), p.b2)
            self.f = -(torch.dot(self.v, self.nav) + self.phis).item()
        return self.f, self.phis


def full_step_is_acceptable(ratio: float, alpha: float) -> bool:
    """Whether a full Newton step of relative size ``ratio = max_i |delta_i / v_i|`` is
    certain to pass the Armijo test, so the potential need not be evaluated.

    The potential's quadratic part is exact to second order; the separable part
    ``-b_i phi(v_i)`` has third derivative ``(1 + 1/alpha) hd_i(xi) / xi`` with
    ``hd = c v^(-1/alpha - 1)`` the Hessian's diagonal term, and ``xi >= (1 - r) v``. So
    with ``lam^2 = delta^T H delta = res^T delta`` (a Newton step),
    ``f(v + delta) - f(v) <= -(1/2 - kappa) lam^2``,
    ``kappa = (1 + 1/alpha) r (1 - r)^(-(2 + 1/alpha)) / 6``. Armijo asks
    ``<= -1e-4 lam^2``; kappa <= 1/4 leaves half the margin to rounding.
    """
    if not ratio < 1.0:
        return False
    inv = 1.0 / alpha
    kappa = (1.0 + inv) * ratio * (1.0 - ratio) ** (-(2.0 + inv)) / 6.0
    return kappa <= _KAPPA


def _line_search_sequential(
    p: _Scaled, point: _Point, delta: Tensor, ratio: float | None
) -> tuple[_Point, float]:
    """The same Armijo backtracking, one candidate at a time, stopping at the first acceptable
    step (usually the full one): on the CPU a host test costs nothing and this does fewer,
    smaller operations. Same results as :func:`_line_search_batched`. A full Newton step
    that :func:`full_step_is_acceptable` proves acceptable is taken without evaluating the
    potential.

    Takes ``max |delta / v|`` (if known: the step is an unclipped Newton step) as a host
    number; returns the new point and the relative step size + index of the step taken."""
    v = point.v
    if ratio is not None and full_step_is_acceptable(ratio, p.alpha):
        return _Point(p, torch.add(v, delta)), ratio
    f0, phis0 = point.value(p)
    slope = -2 * _ARMIJO * float(torch.dot(point.res, delta))
    slack = None  # needed only near convergence, where the decrease drowns in rounding
    t = 1.0
    for j in range(_N_STEPS):
        v_new = torch.add(v, delta, alpha=t)
        nav, phis_n, f_new = p.host_potential(v_new)
        if f_new > f0 + t * slope and slack is None:
            slack = float(p.slack(v, phis0))
        if j == _N_STEPS - 1 or f_new <= f0 + t * slope + (slack or 0.0):
            break
        t *= _BACKTRACK
    if ratio is None:
        ratio = torch.div(delta, v).abs_().max().item()
    new = _Point(p, v_new, nav)
    new.f, new.phis = f_new, phis_n
    return new, ratio * t + j


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
    if check_every == 1:
        return _newton_host(p, v, a1, dscale, tol, max_iter)
    quad, phis = p.potential2(v)
    it = 0
    last_good = v
    while it < max_iter:
        for _ in range(check_every):
            it += 1
            vp, res = p.residual(v)
            delta, _ = p.direction(v, vp, res, host_checks=False)
            v, quad, phis, rel_step = _line_search_batched(p, v, res, delta, quad, phis)
        done = _test(p, v, None, float(rel_step), it, a1, dscale, tol)
        if done is not None:
            return (v if done else last_good), it, done
        last_good = v
    return v, it, False


def _newton_host(
    p: _Scaled, v: Tensor, a1: Tensor, dscale: Tensor, tol: float, max_iter: int
) -> tuple[Tensor, int, bool]:
    """:func:`_newton` with a test every iteration, so decisions are taken on the host too
    (the CPU default): each iterate carries its residual, reused by the next direction
    and the residual test."""
    point = _Point(p, v)
    it = 0
    last_good = v
    while it < max_iter:
        it += 1
        delta, ratio = p.direction(point.v, point.vp, point.res, host_checks=True)
        point, rel = _line_search_sequential(p, point, delta, ratio)
        done = _test(p, point.v, (point.vp, point.res), rel, it, a1, dscale, tol)
        if done is not None:
            return (point.v if done else last_good), it, done
        last_good = point.v
    return point.v, it, False


def _test(
    p: _Scaled,
    v: Tensor,
    residual: tuple[Tensor, Tensor] | None,
    rel: float,
    it: int,
    a1: Tensor,
    dscale: Tensor,
    tol: float,
) -> bool | None:
    """The convergence test after iteration ``it`` (a relative step ``rel`` to ``v``, and
    :meth:`_Scaled.residual` at ``v`` if known): True if converged at ``v``, False if a
    weight over- or underflowed (``rel`` not finite: keep the last good iterate), None to
    go on.

    A full step of relative size below 1e-7 has converged (quadratic convergence makes the
    next iterate exact to rounding). The residual tests: the componentwise one once a full
    step was small enough for the new iterate to be nearly exact (it may save the
    confirming step), and both every 4 iterations, for the rare cases the step test cannot
    meet (the normwise one of the unscaled system, which a task whose weight underflows can
    still meet).
    """
    if rel <= _FULL_STEP_TOL:
        return True
    if not math.isfinite(rel):
        return False
    if rel > _NEAR_STEP and it % 4:
        return None
    vp, res = p.residual(v) if residual is None else residual
    if bool(p.componentwise_error(v, vp, res) <= tol):
        return True
    if it % 4 == 0:
        w = dscale * v
        if normwise_residual_error(a1, w, w.pow(p.inv)) <= tol:
            return True
    return None


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
    with torch.inference_mode():  # less dispatch overhead on these tiny tensors
        a, dmin, dmax = check_gram_diagonal(gram)
        if check_every is None:
            check_every = 1 if a.device.type == "cpu" else 4
        sol = _solve(a, (dmin, dmax), alpha, tol, max_iter, check_every, init)
    # Outside inference mode, so the weights can enter autograd graphs.
    return AlphaFairSolution(sol.weights.clone(), sol.info)


def _solve(
    a: Tensor,
    diagonal: tuple[float, float],
    alpha: float,
    tol: float,
    max_iter: int,
    check_every: int,
    init: Tensor | None,
) -> AlphaFairSolution:
    """Solve on a checked Gram matrix ``a`` whose diagonal spans ``diagonal = (min, max)``."""
    k = a.shape[0]
    if math.isinf(alpha):
        return _max_min_fair(a)
    dmin, dmax = diagonal
    if not dmax > 0:
        ones = torch.ones(k, dtype=a.dtype, device=a.device)
        return AlphaFairSolution(ones, SolverInfo(0, 0.0, 0.0, True, zero_gram=True))
    a1 = a / dmax
    out_scale = dmax ** (-alpha / (alpha + 1.0))

    ridges = _RIDGES if dmin <= 0 else (0.0,) + _RIDGES  # a zero task needs a ridge
    w1_init = None if init is None else _check_init(init, k, a) / out_scale
    # Large alpha is a barrier-like problem (inactive tasks' weights are ~ c^(-alpha));
    # reach it by continuation from a moderate alpha, warm-starting each stage.
    stages = [alpha]
    while stages[0] > _CONTINUATION_FROM and w1_init is None:
        stages.insert(0, max(stages[0] / _CONTINUATION_RATIO, _CONTINUATION_FROM))
    total_it = 0
    for rho in ridges:
        a_rho = a1 if rho == 0.0 else _ridged(a1, rho)
        start = w1_init if rho == ridges[0] else None
        w1, it, ok = _continuation(a_rho, alpha, stages, start, tol, max_iter, check_every)
        total_it += it
        if not ok:
            continue
        berr, stationary = _assess(a1, w1, alpha)
        if rho == 0.0 and stationary:
            continue  # converged only by sending weights to infinity: regularise instead
        return AlphaFairSolution(out_scale * w1, SolverInfo(total_it, berr, rho, True))
    berr = _assess(a1, w1, alpha)[0]
    return AlphaFairSolution(out_scale * w1, SolverInfo(total_it, berr, ridges[-1], False))


def _continuation(
    a1: Tensor,
    alpha: float,
    stages: list[float],
    start: Tensor | None,
    tol: float,
    max_iter: int,
    check_every: int,
) -> tuple[Tensor, int, bool]:
    """Solve at each alpha of ``stages`` (ending at ``alpha``) from the previous stage's
    weights; stop at the first stage that does not converge. Returns (w1, iterations, ok)."""
    total_it = 0
    for stage_alpha in stages:
        stage_tol = tol if stage_alpha == alpha else _STAGE_TOL
        w1, it, ok = _solve_scaled(a1, stage_alpha, start, stage_tol, max_iter, check_every)
        total_it += it
        start = w1
        if not ok:
            break
    return w1, total_it, ok


def _ridged(a1: Tensor, rho: float) -> Tensor:
    """``a1 + rho diag(a1)``, with ``rho`` itself on the zero diagonal entries (zero tasks)."""
    d1 = a1.diagonal().clamp_min(0.0)
    return a1 + torch.diag(rho * torch.where(d1 <= 0, torch.ones_like(d1), d1))


def _solve_scaled(
    a1: Tensor, alpha: float, init: Tensor | None, tol: float, max_iter: int, check_every: int
) -> tuple[Tensor, int, bool]:
    """Solve ``a1 w = w^(-1/alpha)`` for a Gram matrix with max diagonal ~1 and no zero
    diagonal entry, after the per-task change of variable ``w = dscale * v``."""
    # Per-task rescaling exponent: unit diagonal (p = 1) unless alpha < 1/2, where the
    # right-hand side weights b = d^(1 - 1/alpha) would span too many decades.
    p = 1.0 if alpha >= 0.5 else alpha / (1.0 - alpha)
    dscale = a1.diagonal().rsqrt() if p == 1.0 else a1.diagonal().pow(-0.5 * p)
    a_hat = torch.outer(dscale, dscale).mul_(a1)
    b = dscale.pow(1.0 - 1.0 / alpha)
    if init is not None:
        v0 = init / dscale
    elif p == 1.0:  # unit diagonal: the diagonal problem's solution is b^(alpha / (alpha + 1))
        v0 = dscale.pow((alpha - 1.0) / (alpha + 1.0))
    else:
        v0 = (b / a_hat.diagonal()).pow(alpha / (alpha + 1.0))
    v, it, ok = _newton(a_hat, b, alpha, v0, a1, dscale, tol, max_iter, check_every)
    return dscale * v, it, ok


def _assess(a1: Tensor, w1: Tensor, alpha: float) -> tuple[float, bool]:
    """The returned weights' normwise backward error, and whether they are numerically
    Pareto stationary, in one host round trip.

    The backward error ``||A w - w^(-1/alpha)|| / (||A|| ||w|| + ||w^(-1/alpha)||)`` is
    invariant under the solver's scaling (``A = dmax a1``, ``w = dmax^(-alpha/(alpha+1)) w1``
    scale every term by ``dmax^(1/(alpha+1))``), so it is computed on ``a1``, unregularised.

    Pareto stationarity: at such a point Newton "converges" in the normwise sense by sending
    the weights to infinity along a non-negative null vector of ``A``; the measure
    ``w^T A w / (sum_i w_i ||g_i||)^2``, invariant to per-task gradient scales, is then at
    rounding level.
    """
    norm = torch.linalg.vector_norm
    aw = torch.mv(a1, w1)
    rhs = torch.pow(w1, -1.0 / alpha)
    norms = a1.diagonal().clamp_min(0.0).sqrt()
    res, a_fro, w_norm, rhs_norm, quad, lin = torch.stack(
        [
            norm(aw - rhs),
            torch.linalg.matrix_norm(a1),
            norm(w1),
            norm(rhs),
            torch.dot(w1, aw),
            torch.dot(w1, norms),
        ]
    ).tolist()
    denom = a_fro / a1.shape[0] ** 0.5 * w_norm + rhs_norm
    berr = 0.0 if denom == 0 else res / denom
    return berr, quad <= _STATIONARY * lin * lin


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
