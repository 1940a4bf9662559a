"""Exact solver of the dual problem of CAGrad (Liu, Liu, Jin, Stone & Liu, NeurIPS 2021).

CAGrad's direction maximises the worst local improvement in a ball around the mean
gradient ``g0 = (1/K) sum_i g_i`` (the paper's primal problem):

    max_d  min_i g_i . d   subject to   ||d - g0|| <= sqrt(phi),   phi = c^2 ||g0||^2,

whose dual, the problem the paper solves, is, with ``g_w = G^T w`` for ``w`` in the simplex,

    min_{w in simplex}  F(w) = g_w . g0 + sqrt(phi) ||g_w||,
    d = g0 + sqrt(phi) / ||g_w|| g_w.

Every term is a function of the Gram matrix ``A = G G^T``: ``g_w . g0 = w^T A 1 / K``,
``||g_w||^2 = w^T A w`` and ``||g0||^2 = 1^T A 1 / K^2``: a K-dimensional convex problem,
non-smooth where ``g_w = 0``.

Method. ``A`` is divided by ``trace(A) / K`` and ``F`` by ``||g0||``, which makes the problem
scale-free (gradient scales from 1e-15 to 1e15 or per-task spreads of 30 decades change
nothing). Everything runs in float64 on the Gram matrix's device, in two stages:

1. A primal-dual interior-point method (Mehrotra's predictor-corrector) on the KKT system
   ``grad F(w) = lam 1 + z``, ``z >= 0``, ``w_i z_i = 0``, where ``F`` is smooth
   (``g_w != 0``): typically 6 to 12 iterations of one K x K Cholesky solve. It solves the
   equations, so ``w`` converges to machine precision, which the paper's formula for ``d``
   needs (minimising ``F`` to a gap ``eps`` fixes ``w`` only to ``sqrt(eps)``).
   After each iteration the support the iterate suggests (``w_i > z_i``) is tried: on a
   given support the stationary point has a closed form (one Cholesky factorisation of
   ``Q_SS``), corrected a few times by an active-set rule, and it is taken when the same
   certificate accepts it; this usually happens after one or two iterations, where the
   interior-point method alone needs 8 to 13 at K = 40.
   For K = 2 the minimiser over the segment has a closed form, taken instead when the
   same certificate accepts it (it usually does, at a tenth of the cost).
2. If stage 1 cannot certify its answer (an optimum at or near the kink ``g_w = 0``, or
   iterates that pass close to it), the second-order cone program, with
   ``A / (trace(A) / K) = R^T R`` (symmetric eigensolver, rounding-level eigenvalues
   dropped),

       min  b^T w + c t   s.t.  1^T w = 1,  w >= 0,  (t, R w) in the cone {t >= ||y||},

   which has no kink, by a primal-dual interior-point method with Nesterov-Todd scaling and
   Mehrotra's predictor-corrector (the cone-program method described for CVXOPT by
   Vandenberghe, 2010), the cone's scaling updated in product form in the scaled space so
   that it stays accurate near the cone's boundary; 15 to 40 iterations.

Certificates, not estimates. ``F`` is convex and positively homogeneous, so at any ``w`` the
Frank-Wolfe gap ``F(w) - min_i grad_i F(w)`` bounds ``F(w) - F*``; it is also exactly the
duality gap of the paper's ``d = g0 + sqrt(phi) / ||g_w|| g_w``, which lies on the ball's
boundary with ``min_i g_i . d = ||g0|| min_i grad_i F(w)``. Stage 1 stops when it is below
``tol`` times the objective's scale. Stage 2 stops on ``F(w)`` minus ``min_i g_i . d`` for the
primal-feasible ``d`` built from its dual cone variable, and its ``d`` is then the
projection below, certified the same way.

The optimum at ``g_w = 0`` (a convex combination of the gradients vanishes and no other
does better, e.g. a zero gradient, or ``c >= 1`` at a Pareto-stationary point) has
``F* = 0`` and no formula ``g0 + sqrt(phi) / ||g_w|| g_w``: every ``d`` in the ball with
``g_i . d >= 0`` for all ``i`` is optimal. The solver returns the optimal ``d`` closest to
``g0``: the projection of ``g0`` onto ``{d : g_i . d >= L for all i}`` (``L`` the certified
lower bound on ``F*``), i.e. ``d = g0 + G^T mu`` with ``mu >= 0`` minimising
``mu^T A mu / 2 + mu^T (A 1 / K - L 1)``, by a primal-dual interior-point method for this
small QP. The same projection (the unique optimal ``d`` when ``g_w != 0``) replaces the
formula whenever the formula is not certified.
The references' ``d`` at ``g_w = 0`` is ``g0`` (with their ``1e-8`` added to ``||g_w||`` the
second term vanishes with ``g_w``), which may conflict with some task. Near ``g_w = 0`` the Gram matrix determines
``||g_w||`` only to about ``sqrt(eps) ||G||``, so no Gram-based method can certify ``F``
there beyond that.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from fairmtl.solvers._active_set import SupportTrials, active_set, cholesky_solve_on
from fairmtl.solvers._gram import SolverInfo, check_gram, cholesky_apply

_STEP_TO_BOUNDARY = 0.99
_STALL = 5  # iterations without a (halved) better certificate before a method stops
_MARGIN = 10.0  # projection level below the lower bound on F*, in units of tol * scale
_CERTIFIED = 100.0  # certified gap, in units of tol, accepted for the paper's formula
_ACCEPTED = 1000.0  # certified gap, in units of tol, reported as converged after a projection
_AT_ZERO = 10.0  # ||g_w|| below this many sqrt(eps(dtype)) (normalised): optimum at g_w = 0
_ROUND = 1e-9  # weights below this (relative to the largest) are tried at zero at g_w = 0
_SUPPORT_TRIES = 6  # interior-point iterates whose (new) support is tried (_crossover)


@dataclass(frozen=True)
class CAGradSolution:
    """Solution of CAGrad's dual problem.

    Attributes:
        weights: the dual weights ``w`` (K,) on the simplex.
        coefficients: ``alpha`` (K,) with the paper's direction ``d = G^T alpha`` (before
            any rescaling): ``1 / K + sqrt(phi) / ||g_w|| w`` when ``g_w != 0``.
        value: ``F(w) = g_w . g0 + sqrt(phi) ||g_w||`` in the Gram matrix's units.
        at_zero: the optimum is (numerically) at ``g_w = 0`` and ``coefficients`` come from
            the projection described in the module docstring.
        info: diagnostic; ``backward_error`` is the certified duality gap
            ``F(w) - min_i g_i . d`` over the objective's scale
            ``||g0|| (max_i |g_i . g0| / ||g0|| + c max_i ||g_i||)``.
    """

    weights: Tensor
    coefficients: Tensor
    value: Tensor
    at_zero: bool
    info: SolverInfo


def check_c(c: float) -> float:
    """Validate CAGrad's ``c`` (the ball's radius relative to ``||g0||``): finite and >= 0."""
    if isinstance(c, bool) or not isinstance(c, numbers.Real):
        raise TypeError(f"c must be a real number >= 0, got {c!r}")
    value = float(c)
    if not (value >= 0.0 and math.isfinite(value)):
        raise ValueError(f"c must be a finite number >= 0, got {c!r}")
    return value


def solve_cagrad_dual(
    gram: Tensor,
    c: float,
    *,
    tol: float = 1e-12,
    max_iter: int = 60,
    check_every: int | None = None,
) -> CAGradSolution:
    """Solve ``min_{w in simplex} g_w . g0 + c ||g0|| ||g_w||``, the dual of CAGrad's
    ``max_{||d - g0|| <= c ||g0||} min_i g_i . d`` (Liu et al. 2021), and return ``d``.

    Args:
        gram: (K, K) symmetric positive semi-definite Gram matrix ``A = G G^T``.
        c: radius of the ball relative to ``||g0||`` (``c >= 0``).
        tol: target for the certified duality gap, relative to the objective's scale.
        max_iter: maximum iterations of each interior-point method.
        check_every: iterations of the first interior-point method between its
            convergence tests (host round trips): default 1 on the CPU, where a test costs
            nothing and each iterate's support is also tried exactly (the crossover), and
            4 on accelerators, where the iterations in between run with no host round trip
            (see :func:`_dual_ipm_sync_free`).

    Returns:
        :class:`CAGradSolution`, computed in float64 on ``gram``'s device and returned in
        ``gram``'s dtype. Special cases: ``A = 0`` gives uniform weights and ``d = 0``
        (``info.zero_gram``); ``c = 0`` or ``g0 = 0`` (``phi = 0``) gives ``d = g0``;
        ``K = 1`` gives ``d = (1 + c) g_1``.
    """
    c = check_c(c)
    if check_every is not None and (
        isinstance(check_every, bool) or not isinstance(check_every, int) or check_every < 1
    ):
        raise ValueError(f"check_every must be a positive int, got {check_every!r}")
    with torch.inference_mode():  # less dispatch overhead on these tiny tensors
        a = check_gram(gram)
        every = check_every if check_every is not None else (1 if a.is_cpu else 4)
        sol = _solve(a, c, gram.dtype, tol, max_iter, every)
    # Outside inference mode, so that the results can enter autograd graphs.
    return CAGradSolution(
        sol.weights.clone(), sol.coefficients.clone(), sol.value.clone(), sol.at_zero, sol.info
    )


def _solve(
    a: Tensor, c: float, out: torch.dtype, tol: float, max_iter: int, check_every: int
) -> CAGradSolution:
    k = a.shape[0]
    ones = torch.ones(k, dtype=a.dtype, device=a.device)
    sigma = a.diagonal().clamp_min(0.0).sum() / k
    # The problem's scalars in one host round trip (inf / NaN where sigma = 0: not used).
    q = a / sigma
    qbar = q.sum(dim=1) / k  # g_i . g0, normalised
    g0n = torch.sqrt((qbar.sum() / k).clamp_min(0.0))  # ||g0||, normalised
    b = qbar / g0n
    sigma_h, g0n_h, root_diag, b_max = torch.stack(
        [sigma, g0n, q.diagonal().max().sqrt(), b.abs().max()]
    ).tolist()
    if not sigma_h > 0:
        u = ones / k
        zero = torch.zeros((), dtype=out, device=a.device)
        return CAGradSolution(
            u.to(out), u.to(out), zero, True, SolverInfo(0, 0.0, 0.0, True, zero_gram=True)
        )
    if k == 1:
        # F = (1 + c) ||g_1||^2 and d = g0 + c ||g0|| g_1 / ||g_1|| = (1 + c) g_1.
        return CAGradSolution(
            ones.to(out), (ones * (1.0 + c)).to(out), (a[0, 0] * (1.0 + c)).to(out), False,
            SolverInfo(0, 0.0, 0.0, True),
        )  # fmt: skip
    if c == 0.0 or g0n_h == 0:
        return _linear_case(qbar, sigma, g0n, out)

    s = c * g0n  # sqrt(phi), normalised
    fscale = b_max + c * root_diag
    floor = _AT_ZERO * math.sqrt(torch.finfo(out).eps) * root_diag
    w = _two_tasks(q, b, c) if k == 2 else None
    if w is not None:  # certified like the interior-point iterates, else solved by them
        value_n, ny, fw_gap = _objective(q, b, c, w)
        iters, certified = 0, ny > floor and fw_gap <= tol * fscale
    if w is None or not certified:
        if check_every == 1:
            w, iters, certified = _dual_ipm(q, b, c, fscale, floor, tol, max_iter)
        else:
            w, iters, certified = _dual_ipm_sync_free(
                q, b, c, fscale, floor, tol, max_iter, check_every
            )
        value_n, ny, fw_gap = _objective(q, b, c, w)
        certified = certified or (ny > floor and fw_gap <= tol * fscale)  # a rescue
    lower = -math.inf
    if not certified:
        w_cone, lower, more = _cone_ipm(q, b, c, fscale, tol, max_iter)
        iters += more
        value_c, ny_c, fw_c = _objective(q, b, c, w_cone)
        if bool(value_c < value_n):
            w, value_n, ny, fw_gap = w_cone, value_c, ny_c, fw_c
    at_zero = ny <= floor
    if at_zero:  # the interior-point iterate's tiny weights may hide an exact zero of g_w
        keep = w >= _ROUND * w.max()
        rounded = torch.where(keep, w, torch.zeros_like(w))
        rounded = rounded / rounded.sum()
        value_r, ny_r, fw_r = _objective(q, b, c, rounded)
        if bool(value_r < value_n):
            w, value_n, ny, fw_gap = rounded, value_r, ny_r, fw_r
    if not at_zero and float(fw_gap) <= _CERTIFIED * tol * fscale:
        # The paper's d = g0 + sqrt(phi) / ||g_w|| g_w, certified by the Frank-Wolfe gap.
        alpha = ones / k + (s / ny) * w
        gap = float(fw_gap) / fscale
        converged = True
    else:
        # Lower bounds on F*: the cone program's and the Frank-Wolfe one. At g_w = 0,
        # F* = 0 up to rounding and F(w) >= F* is tried first (a closer level).
        level = max(lower, float(value_n - fw_gap)) if math.isfinite(fw_gap) else lower
        levels = [min(float(value_n), 0.0), level] if at_zero else [level]
        for level in [x for x in levels if math.isfinite(x)] or [min(float(value_n), 0.0)]:
            level = (level - _MARGIN * tol * fscale) * float(g0n)
            mu, more = _projection(q, qbar - level, tol, max_iter)
            iters += more
            radius = torch.sqrt((mu @ (q @ mu)).clamp_min(0.0))
            if bool(radius <= s * (1.0 + 1e-9)):
                break
        if bool(radius > s):  # rounding (or a level above F*): pull d back into the ball
            mu = mu * (s / radius)
        alpha = ones / k + mu
        bound = float(((q @ alpha) / g0n).min())  # min_i g_i . d <= F*
        gap = max(float(value_n) - bound, 0.0) / fscale
        # At g_w = 0 the Gram matrix fixes F(w) only to about (1 + c) sqrt(eps) ||g||^2.
        converged = gap <= _ACCEPTED * tol + (1.0 + c) * floor / fscale * at_zero
    value = value_n * g0n * sigma
    info = SolverInfo(iters, gap, 0.0, converged)
    return CAGradSolution(w.to(out), alpha.to(out), value.to(out), at_zero, info)


def _linear_case(qbar: Tensor, sigma: Tensor, g0n: Tensor, out: torch.dtype) -> CAGradSolution:
    """``phi = 0``: the dual is the linear program ``min_w w^T A 1 / K`` and ``d = g0``.

    The weights are uniform over the minimisers (over all tasks when ``g0 = 0``)."""
    k = qbar.shape[0]
    ones = torch.ones_like(qbar)
    if bool(g0n == 0):
        w = ones / k
        value = torch.zeros((), dtype=qbar.dtype, device=qbar.device)
    else:
        low = qbar.min()
        ties = (qbar <= low + 1e-12 * qbar.abs().max()).to(qbar.dtype)
        w = ties / ties.sum()
        value = low * sigma
    return CAGradSolution(
        w.to(out), (ones / k).to(out), value.to(out), False, SolverInfo(0, 0.0, 0.0, True)
    )


def _objective(q: Tensor, b: Tensor, c: float, w: Tensor) -> tuple[Tensor, float, float]:
    """``(F(w), ||g_w||, Frank-Wolfe gap)`` of the normalised ``F(w) = b^T w + c ||g_w||``,
    the last two as host numbers read in one round trip.

    The gap ``F(w) - min_i grad_i F(w)`` bounds ``F(w) - F*`` (``F`` is convex and
    positively homogeneous); it is infinite where ``g_w`` vanishes numerically.
    """
    p = q @ w
    ny2 = w @ p
    ny = torch.sqrt(ny2.clamp_min(0.0))
    value = b @ w + c * ny
    grad = b + (c / ny.clamp_min(torch.finfo(q.dtype).tiny)) * p
    ny2_h, ny_h, gap = torch.stack([ny2, ny, w @ grad - grad.min()]).tolist()
    if not ny2_h > 0:
        return value, ny_h, math.inf
    return value, ny_h, max(gap, 0.0)


# --- Newton on the smooth dual ------------------------------------------------------------


def _two_tasks(q: Tensor, b: Tensor, c: float) -> Tensor | None:
    """K = 2: the minimiser of the normalised dual over ``w = (t, 1 - t)`` in closed form, or
    None where the formula does not apply (equal gradients, or an optimum at ``g_w = 0``).

    ``||g_w||^2 = n(t)^2 = a0 + 2 a1 t + a2 t^2`` with ``a0 = Q_11``, ``a1 = Q_01 - Q_11`` and
    ``a2 = ||g_0 - g_1||^2``, so ``F'(t) = b_0 - b_1 + c (a1 + a2 t) / n(t)``. With
    ``u = a1 + a2 t`` and ``n^2 = (u^2 + D) / a2``, ``D = a0 a2 - a1^2 = det Q``, it vanishes
    where ``u sqrt(a2) / sqrt(u^2 + D) = r = (b_1 - b_0) / c``:
    ``u = r sqrt(D / (a2 - r^2))`` if ``r^2 < a2``; otherwise ``F`` is monotone on [0, 1] and
    the optimum is an end point. ``F`` is convex, so the root is clipped to [0, 1].
    """
    (q00, q01), (_, q11) = q.tolist()
    b0, b1 = b.tolist()
    a2 = q00 - 2.0 * q01 + q11
    if not a2 > 0.0:
        return None
    r = (b1 - b0) / c
    if r * r >= a2:
        t = 1.0 if r > 0.0 else 0.0
    else:
        det = q00 * q11 - q01 * q01
        if not det > 0.0:
            return None  # parallel gradients: the optimum is at the kink g_w = 0
        u = r * math.sqrt(det / (a2 - r * r))
        t = min(max((u - (q01 - q11)) / a2, 0.0), 1.0)
    return torch.tensor([t, 1.0 - t], dtype=q.dtype, device=q.device)


def _dual_ipm(
    q: Tensor, b: Tensor, c: float, fscale: float, floor: float, tol: float, max_iter: int
) -> tuple[Tensor, int, bool]:
    """Primal-dual interior-point method (Mehrotra predictor-corrector) on the KKT system
    ``grad F(w) = lam 1 + z``, ``z >= 0``, ``w_i z_i = 0`` of the normalised dual
    ``min_{w in simplex} F(w) = b^T w + c ||g_w||`` (``||g_w||^2 = w^T Q w``), where ``F`` is
    smooth (``g_w != 0``). The Hessian ``c / ||g_w|| (Q - p p^T / ||g_w||^2)`` (``p = Q w``)
    is positive semi-definite and ``diag(z / w)`` makes the Newton matrix positive definite.
    It solves the equations, so ``w`` itself converges to machine precision, which the
    paper's formula for ``d`` needs. Gives up (the caller falls back to the cone program)
    when ``g_w`` vanishes or the Frank-Wolfe gap stops decreasing, as it does near an optimum
    at ``g_w = 0``. Returns (w, iterations, certified).
    """
    k = b.shape[0]
    w = torch.full_like(b, 1.0 / k)
    p = torch.mv(q, w)
    ny = math.sqrt(float(torch.dot(w, p)))  # ||g0|| > 0 at the uniform weights
    grad = torch.add(b, p, alpha=c / ny)
    lam = float(grad.min()) - fscale
    z = grad - lam
    best_gap, best_it, it = math.inf, 0, 0
    trials = SupportTrials(_SUPPORT_TRIES)
    while True:
        gap = float(torch.dot(w, grad) - grad.min())
        if gap <= tol * fscale:
            return w / w.sum(), it, True
        if gap < 0.5 * best_gap:
            best_gap, best_it = gap, it
        if it >= max_iter or it - best_it >= _STALL or ny <= floor:
            return w / w.sum(), it, False
        # c / ||g_w|| (Q - p p^T / ||g_w||^2) + diag(z / w), in one rank-one update.
        s = c / ny
        newton = torch.addr(q, p, p, beta=s, alpha=-s / (ny * ny))
        newton.diagonal().add_(z / w)
        solve = _spd_solver(newton)
        if solve is None:
            return w / w.sum(), it, False
        it += 1
        system = _OrthantNewton(solve, w, z, torch.sub(grad, z).sub_(lam), float(w.sum()) - 1.0)
        step, dw, dlam, dz = system.mehrotra()
        w = torch.add(w, dw, alpha=step)
        lam += step * dlam
        z = torch.add(z, dz, alpha=step)
        p = torch.mv(q, w)
        ny2 = float(torch.dot(w, p))
        if not ny2 > 0:
            return w / w.sum(), it, False
        ny = math.sqrt(ny2)
        grad = torch.add(b, p, alpha=c / ny)
        support = w > z
        if trials.new(support):  # the iterate's support, solved exactly
            exact = _crossover(q, b, c, support, tol * fscale, floor)
            if exact is not None:
                return exact, it, True


def _dual_ipm_sync_free(
    q: Tensor,
    b: Tensor,
    c: float,
    fscale: float,
    floor: float,
    tol: float,
    max_iter: int,
    check_every: int,
) -> tuple[Tensor, int, bool]:
    """:func:`_dual_ipm` for accelerators: the same iterations, with every scalar (``lam``,
    ``||g_w||``, step lengths, ``mu``) kept on the device, an LU factorisation whose error
    code is not read, so that ``check_every`` iterations run with no host round trip; one
    round trip then tests the Frank-Wolfe gap, the stall rule and ``||g_w||`` (a
    breakdown, seen as a non-finite iterate, gives up with the last tested one). Where it
    gives up, the supports of the tested iterates are tried exactly, oldest first
    (:func:`_crossover`, which reads a few scalars), before the caller falls back to the
    cone program. An iterate that meets the test stops moving (``torch.where`` keeps it), so
    the iterations after it up to the round trip cannot spoil it; they are not counted.
    The gap is that of ``w / 1^T w``, the point returned. Returns (w, iterations,
    certified)."""
    k = b.shape[0]
    w = torch.full_like(b, 1.0 / k)
    p = torch.mv(q, w)
    ny = torch.dot(w, p).sqrt()
    grad = torch.add(b, p * (c / ny))
    lam = grad.min() - fscale
    z = grad - lam
    jitter = torch.finfo(q.dtype).tiny
    target = tol * fscale
    best_gap, best_it, it = math.inf, 0, 0
    moved = torch.zeros((), dtype=q.dtype, device=q.device)  # iterations that moved
    tested: list[tuple[Tensor, Tensor]] = []  # (w, z) of the iterates tested
    while True:
        gap_t = torch.dot(w, grad) / w.sum() - grad.min()
        gap, ny_h, finite, iters = torch.stack(
            [gap_t, ny, torch.isfinite(w).all().to(q.dtype), moved]
        ).tolist()
        if not (finite == 1.0 and math.isfinite(gap) and math.isfinite(ny_h)):
            return _rescue(q, b, c, tested, target, floor), int(iters), False
        if gap <= target:
            return w / w.sum(), int(iters), True
        tested.append((w, z))
        if gap < 0.5 * best_gap:
            best_gap, best_it = gap, it
        if it >= max_iter or it - best_it >= _STALL or ny_h <= floor:
            return _rescue(q, b, c, tested, target, floor), int(iters), False
        for _ in range(check_every):
            it += 1
            if it > 1:  # the test above covered the first iterate
                gap_t = torch.dot(w, grad) / w.sum() - grad.min()
            moving = gap_t > target
            moved = moved + moving
            w, lam, z = _sync_free_iteration(q, w, lam, z, p, ny, grad, c, jitter, moving)
            p = torch.mv(q, w)
            ny = torch.dot(w, p).clamp_min(jitter).sqrt()
            grad = torch.add(b, p * (c / ny))


def _rescue(
    q: Tensor,
    b: Tensor,
    c: float,
    tested: list[tuple[Tensor, Tensor]],
    tol: float,
    floor: float,
) -> Tensor:
    """Where :func:`_dual_ipm_sync_free` gives up: the first certified exact optimum on the
    support of one of its tested iterates ``(w, z)`` (:func:`_crossover`, at most
    ``_SUPPORT_TRIES`` supports, oldest first), else the last of them, normalised (the
    uniform weights if none)."""
    trials = SupportTrials(_SUPPORT_TRIES)
    for w, z in tested:
        support = w > z
        if trials.new(support):
            exact = _crossover(q, b, c, support, tol, floor)
            if exact is not None:
                return exact
    w = tested[-1][0] if tested else torch.full_like(b, 1.0 / b.shape[0])
    return w / w.sum()


def _sync_free_iteration(
    q: Tensor,
    w: Tensor,
    lam: Tensor,
    z: Tensor,
    p: Tensor,
    ny: Tensor,
    grad: Tensor,
    c: float,
    jitter: float,
    moving: Tensor,
) -> tuple[Tensor, Tensor, Tensor]:
    """One Mehrotra predictor-corrector iteration of :func:`_dual_ipm` with device scalars:
    the Newton matrix ``c / ||g_w|| (Q - p p^T / ||g_w||^2) + diag(z / w)``, Jacobi-scaled,
    by an LU whose error code is not read. Returns the new (w, lam, z), or the old ones
    where ``moving`` (a 0-d bool) is false."""
    k = w.shape[0]
    s = c / ny
    newton = torch.sub(q * s, torch.outer(p, p) * (s / (ny * ny)))
    newton.diagonal().add_(z / w)
    sc = newton.diagonal().abs().clamp_min(jitter).rsqrt()
    scale = torch.outer(sc, sc)
    lu, piv, _ = torch.linalg.lu_factor_ex(newton * scale)
    neg_r_d = torch.sub(z, grad).add_(lam)  # -(grad F - lam 1 - z)
    r_p = w.sum() - 1.0
    neg_inv_w = torch.reciprocal(w).neg_()
    ones = torch.ones_like(w)

    def direction(r_c: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        rhs = torch.stack([torch.addcmul(neg_r_d, r_c, neg_inv_w), ones], dim=1)
        sol = torch.linalg.lu_solve(lu, piv, rhs * sc.unsqueeze(1)) * sc.unsqueeze(1)
        sums = sol.sum(dim=0)
        dlam = (-r_p - sums[0]) / sums[1]
        dw = torch.addcmul(sol[:, 0], sol[:, 1], dlam)
        return dw, dlam, torch.addcmul(r_c, z, dw).mul_(neg_inv_w)

    def boundary(dw: Tensor, dz: Tensor) -> Tensor:
        worst = torch.minimum(dw / w, dz / z).min()
        return torch.where(worst < 0.0, -1.0 / worst, torch.full_like(worst, math.inf))

    wz = w * z
    mu = wz.sum() / k
    dw, _, dz = direction(wz)
    step = boundary(dw, dz).clamp_max(1.0)
    mu_aff = torch.dot(w + step * dw, z + step * dz) / k
    centering = (mu_aff / mu).clamp(0.0, 1.0) ** 3
    dw, dlam, dz = direction(torch.addcmul(wz, dw, dz).sub_(centering * mu))
    step = (_STEP_TO_BOUNDARY * boundary(dw, dz)).clamp_max(1.0)
    return (
        torch.where(moving, w + step * dw, w),
        torch.where(moving, lam + step * dlam, lam),
        torch.where(moving, z + step * dz, z),
    )


def _support_solve(q: Tensor, b: Tensor, c: float, index: Tensor) -> tuple[Tensor, Tensor] | None:
    """The stationary point of the normalised dual on the face ``{w : w_i = 0 off index}``
    in closed form, and its multipliers ``grad_i F - lam``; None where it does not exist (a
    singular ``Q_SS`` or no point with ``g_w != 0``).

    On the support ``S`` stationarity reads ``b_S + t Q_SS w_S = lam 1`` with
    ``t = c / ||g_w||``, so ``w_S = (lam u - v) / t`` with ``u = Q_SS^{-1} 1`` and
    ``v = Q_SS^{-1} b_S``. ``1^T w_S = 1`` gives ``t = A lam - B`` (``A = 1^T u``,
    ``B = 1^T v``), and ``||g_w||^2 = c^2 / t^2`` the quadratic
    ``A lam^2 - 2 B lam + C = c^2`` (``C = b_S^T v``), whose root with ``t > 0`` is
    ``t = sqrt(B^2 - A (C - c^2))``, ``lam = (B + t) / A``: one Cholesky factorisation.
    The weights may be negative (a wrong support); ``b + t Q w`` is ``F``'s gradient at
    ``w`` when ``t > 0``.
    """
    sub_b = b[index]
    sol = cholesky_solve_on(q, index, torch.stack([torch.ones_like(sub_b), sub_b], dim=1))
    if sol is None:
        return None
    u, v = sol[:, 0], sol[:, 1]
    big_a, big_b, big_c = torch.stack([u.sum(), v.sum(), torch.dot(sub_b, v)]).tolist()
    disc = big_b * big_b - big_a * (big_c - c * c)
    if not (disc > 0.0 and big_a > 0.0):
        return None
    t = math.sqrt(disc)
    lam = (big_b + t) / big_a
    w = torch.zeros_like(b).index_copy_(0, index, torch.add(v, u, alpha=-lam).div_(-t))
    return w, torch.add(b, torch.mv(q, w), alpha=t).sub_(lam)


def _crossover(
    q: Tensor, b: Tensor, c: float, keep: Tensor, tol: float, floor: float
) -> Tensor | None:
    """The exact optimum from the support ``keep`` of an interior-point iterate
    (:func:`fairmtl.solvers._active_set.active_set` on :func:`_support_solve`), if its
    Frank-Wolfe gap is at most ``tol`` (the interior-point method's own certificate; a
    multiplier above ``-tol`` is within it), else None. From an early iterate's support
    (``w_i > z_i``) this usually takes one to three solves, where the interior-point method
    needs several more iterations."""
    found = active_set(lambda index: _support_solve(q, b, c, index), keep, tol)
    if found is None:
        return None
    w = found[0]
    _, ny, gap = _objective(q, b, c, w)
    return w if ny > floor and gap <= tol else None


# --- the cone program -----------------------------------------------------------------


def _nt_scaling(s: Tensor, z: Tensor) -> tuple[Tensor, Tensor]:
    """Nesterov-Todd scaling of one second-order cone: the symmetric ``W`` with
    ``W z = W^{-1} s``, and ``W^{-1}``. ``W = beta (2 v v^T - J)``, ``J = diag(1, -I)``,
    ``v`` the Jordan square root of the normalised scaling point
    ``(s / sqrt(s^T J s) + J z / sqrt(z^T J z)) / (2 gamma)``."""
    ns, nz = _jnorm(s), _jnorm(z)
    sb, zb = s / ns, z / nz
    gamma = torch.sqrt((1.0 + sb @ zb) / 2.0)
    jz = torch.cat([zb[:1], -zb[1:]])
    wb = (sb + jz) / (2.0 * gamma)
    v = torch.cat([wb[:1] + 1.0, wb[1:]]) / torch.sqrt(2.0 * (wb[0] + 1.0))
    jv = torch.cat([v[:1], -v[1:]])
    sign = torch.ones_like(v)
    sign[1:] = -1.0
    beta = torch.sqrt(ns / nz)
    w = beta * (2.0 * torch.outer(v, v) - torch.diag(sign))
    w_inv = (2.0 * torch.outer(jv, jv) - torch.diag(sign)) / beta
    return w, w_inv


def _jnorm(x: Tensor) -> Tensor:
    """``sqrt(x_0^2 - ||x_1||^2)`` for ``x`` inside the cone."""
    n1 = torch.linalg.vector_norm(x[1:])
    return torch.sqrt(((x[0] - n1) * (x[0] + n1)).clamp_min(torch.finfo(x.dtype).tiny))


def _jprod(u: Tensor, v: Tensor) -> Tensor:
    """Jordan product of the second-order cone: ``(u . v, u_0 v_1 + v_0 u_1)``."""
    return torch.cat([(u @ v).reshape(1), u[0] * v[1:] + v[0] * u[1:]])


def _jsolve(lam: Tensor, r: Tensor) -> Tensor:
    """The ``u`` with ``lam o u = r`` (Jordan product)."""
    l0, l1 = lam[0], lam[1:]
    det = _jnorm(lam) ** 2
    u0 = (l0 * r[0] - l1 @ r[1:]) / det
    return torch.cat([u0.reshape(1), (r[1:] - u0 * l1) / l0])


def _cone_step(x: Tensor, d: Tensor) -> Tensor:
    """Largest ``a >= 0`` with ``x + a d`` in the second-order cone (``x`` inside it)."""
    qa = d[0] * d[0] - d[1:] @ d[1:]
    qb = x[0] * d[0] - x[1:] @ d[1:]
    qc = _jnorm(x) ** 2
    disc = qb * qb - qa * qc
    root = torch.sqrt(disc.clamp_min(0.0))
    big = -(qb + torch.where(qb >= 0, root, -root))
    inf = torch.full_like(qa, math.inf)
    r1 = torch.where(qa != 0, big / torch.where(qa != 0, qa, 1.0), inf)
    r2 = torch.where(big != 0, qc / torch.where(big != 0, big, 1.0), inf)
    r1 = torch.where((r1 > 0) & (disc >= 0), r1, inf)
    r2 = torch.where((r2 > 0) & (disc >= 0), r2, inf)
    return torch.minimum(r1, r2)


def _orthant_step(x: Tensor, d: Tensor) -> Tensor:
    """Largest ``a >= 0`` with ``x + a d >= 0`` (``x > 0``)."""
    return torch.where(d < 0, -x / d, torch.full_like(x, math.inf)).min()


def _cone_ipm(
    q: Tensor, b: Tensor, c: float, fscale: float, tol: float, max_iter: int
) -> tuple[Tensor, float, int]:
    """Primal-dual interior-point method for the cone form of the normalised dual,

        min b^T w + c t   s.t.  1^T w = 1,  s_lin = w >= 0,  s_soc = (t, R w) in Q,

    with ``R^T R = Q`` (the normalised Gram matrix). Dual: ``z_lin >= 0``, ``z_soc = (z_0, z_1)`` in Q,
    ``b - z_lin - R^T z_1 + y 1 = 0`` and ``z_0 = c``; for any ``||u|| <= c`` the point
    ``d = g0 + ||g0|| G^T R^+ u`` is feasible for CAGrad's primal, so
    ``min_i (b + R^T u)_i <= F*``: with ``u = -z_1`` (pulled into the ball) this lower
    bound and ``F(w)`` certify every iterate. Starts primal and dual feasible.
    Returns (the best certified ``w``, its lower bound on ``F*``, iterations).
    """
    k = b.shape[0]
    dev, dt = b.device, b.dtype
    evals, evecs = torch.linalg.eigh(q)
    keep = evals > k * torch.finfo(dt).eps * evals[-1]
    r = evals[keep].sqrt().unsqueeze(1) * evecs[:, keep].T  # (rank, K), q ~= r^T r
    m = r.shape[0] + 1
    ones = torch.ones(k, dtype=dt, device=dev)
    e_soc = torch.zeros(m, dtype=dt, device=dev)
    e_soc[0] = 1.0
    # Primal x = (w, t) and slacks s = -G x; dual (y, z) with z_0 = c.
    w = ones / k
    t = torch.linalg.vector_norm(r @ w) + 1.0
    s_lin = w.clone()
    s_soc = torch.cat([t.reshape(1), r @ w])
    y = 1.0 - b.min()
    z_lin = b + y
    z_soc = c * e_soc
    scale, scale_inv_t = _nt_scaling(s_soc, z_soc)  # W (in product form) and W^{-T}
    lam_soc = scale @ z_soc
    best: tuple[float, Tensor, float] = (math.inf, w, -math.inf)
    best_it, it = 0, 0
    while True:
        wn = w / w.sum()
        value, _, _ = _objective(q, b, c, wn)
        u = -z_soc[1:]
        u = u * torch.clamp(c / torch.linalg.vector_norm(u).clamp_min(1e-300), max=1.0)
        lower = (b + r.T @ u).min()
        gap = float(value - lower)
        if not math.isfinite(gap):
            break
        if gap < best[0]:
            best, best_it = (gap, wn, float(lower)), it
        if gap <= tol * fscale or it >= max_iter or it - best_it >= _STALL:
            break
        it += 1
        # Residuals: r_x = c_x + G^T z + A^T y, r_y = A x - 1, r_z = G x + s.
        rx = torch.cat([b - z_lin - r.T @ z_soc[1:] + y, (c - z_soc[0]).reshape(1)])
        ry = w.sum() - 1.0
        rz_lin = s_lin - w
        rz_soc = s_soc - torch.cat([t.reshape(1), r @ w])
        gap_c = s_lin @ z_lin + s_soc @ z_soc
        mu = gap_c / (k + 1)
        d_lin = s_lin / z_lin  # W^2 of the orthant
        lam_lin = torch.sqrt(s_lin * z_lin)
        p_soc = scale_inv_t.T @ scale_inv_t  # (W^T W)^{-1}
        # Reduced Newton matrix G^T W^{-2} G on x = (w, t).
        h = torch.empty(k + 1, k + 1, dtype=dt, device=dev)
        h[:k, :k] = r.T @ p_soc[1:, 1:] @ r + torch.diag(1.0 / d_lin)
        h[:k, k] = r.T @ p_soc[1:, 0]
        h[k, :k] = h[:k, k]
        h[k, k] = p_soc[0, 0]
        solve = _spd_solver(h)
        if solve is None:
            break
        system = _ConeNewton(
            solve, r, rx, ry, rz_lin, rz_soc, d_lin, lam_lin, lam_soc, scale, scale_inv_t
        )
        dx, dy, ds_lin, ds_soc, dz_lin, dz_soc = system.direction(
            -lam_lin * lam_lin, -_jprod(lam_soc, lam_soc)
        )
        a, sl, zl, ss, zs = system.step(ds_lin, ds_soc, dz_lin, dz_soc)
        a = a.clamp(max=1.0)
        gap_aff = (s_lin + a * ds_lin) @ (z_lin + a * dz_lin) + (s_soc + a * ds_soc) @ (
            z_soc + a * dz_soc
        )
        centering = (gap_aff / gap_c).clamp(0.0, 1.0) ** 3
        dx, dy, ds_lin, ds_soc, dz_lin, dz_soc = system.direction(
            -lam_lin * lam_lin - sl * zl + centering * mu,
            -_jprod(lam_soc, lam_soc) - _jprod(ss, zs) + centering * mu * e_soc,
        )
        a, sl, zl, ss, zs = system.step(ds_lin, ds_soc, dz_lin, dz_soc)
        a = (_STEP_TO_BOUNDARY * a).clamp(max=1.0)
        # Product-form update of the cone's scaling, computed in the scaled space.
        w_tilde, w_tilde_inv = _nt_scaling(lam_soc + a * ss, lam_soc + a * zs)
        lam_soc = w_tilde @ (lam_soc + a * zs)
        scale = w_tilde @ scale
        scale_inv_t = w_tilde_inv @ scale_inv_t
        w = w + a * dx[:k]
        t = t + a * dx[k]
        y = y + a * dy
        s_lin = s_lin + a * ds_lin
        s_soc = s_soc + a * ds_soc
        z_lin = z_lin + a * dz_lin
        z_soc = z_soc + a * dz_soc
    return best[1], best[2], it


# --- shared linear algebra and the projection ------------------------------------------


@dataclass(frozen=True)
class _ConeNewton:
    """Newton system of the cone program at one iterate (notation of CVXOPT's ``coneqp``):
    ``G^T dz + A^T dy = -r_x``, ``A dx = -r_y``, ``G dx + ds = -r_z`` and the linearised
    complementarity ``lam o (W^{-T} ds + W dz) = r_c`` in the scaled space, with the reduced
    matrix ``G^T (W^T W)^{-1} G`` factorised once in ``solve``. The orthant's scaling is
    ``diag(sqrt(d))``, ``d = s / z``; the cone's is ``W`` (``scale``), kept in product form."""

    solve: Callable[[Tensor], Tensor]
    r: Tensor
    rx: Tensor
    ry: Tensor
    rz_lin: Tensor
    rz_soc: Tensor
    d_lin: Tensor
    lam_lin: Tensor
    lam_soc: Tensor
    scale: Tensor
    scale_inv_t: Tensor

    def direction(
        self, rc_lin: Tensor, rc_soc: Tensor
    ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
        """(dx, dy, ds_lin, ds_soc, dz_lin, dz_soc) for the complementarity targets."""
        k = self.d_lin.shape[0]
        r, sq_lin = self.r, torch.sqrt(self.d_lin)
        w_inv = self.scale_inv_t.T
        p_soc = w_inv @ self.scale_inv_t
        u_lin = rc_lin / self.lam_lin
        u_soc = _jsolve(self.lam_soc, rc_soc)
        # dz = (W^T W)^{-1} (G dx + r_z) + W^{-1} (lam \ r_c); eliminate it and dy.
        v_lin = self.rz_lin / self.d_lin + u_lin / sq_lin
        v_soc = p_soc @ self.rz_soc + w_inv @ u_soc
        g_v = torch.cat([-v_lin - r.T @ v_soc[1:], -v_soc[:1]])
        e_w = torch.ones_like(g_v)
        e_w[k] = 0.0
        sol = self.solve(torch.stack([-self.rx - g_v, e_w], dim=1))
        dy = (sol[:k, 0].sum() + self.ry) / sol[:k, 1].sum()
        dx = sol[:, 0] - dy * sol[:, 1]
        g_lin = -dx[:k]
        g_soc = torch.cat([-dx[k:], -(r @ dx[:k])])
        dz_lin = (g_lin + self.rz_lin) / self.d_lin + u_lin / sq_lin
        dz_soc = p_soc @ (g_soc + self.rz_soc) + w_inv @ u_soc
        return dx, dy, -self.rz_lin - g_lin, -self.rz_soc - g_soc, dz_lin, dz_soc

    def step(
        self, ds_lin: Tensor, ds_soc: Tensor, dz_lin: Tensor, dz_soc: Tensor
    ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """The largest step keeping s and z in their cones, computed in the scaled space
        where the iterate ``lam`` is well centred, and the scaled directions."""
        sq_lin = torch.sqrt(self.d_lin)
        sl, zl = ds_lin / sq_lin, dz_lin * sq_lin
        ss, zs = self.scale_inv_t @ ds_soc, self.scale @ dz_soc
        steps = torch.stack(
            [
                _orthant_step(self.lam_lin, sl),
                _orthant_step(self.lam_lin, zl),
                _cone_step(self.lam_soc, ss),
                _cone_step(self.lam_soc, zs),
            ]
        )
        return steps.min(), sl, zl, ss, zs


def _boundary_step(x: Tensor, dx: Tensor, z: Tensor, dz: Tensor) -> float:
    """Largest ``a >= 0`` with ``x + a dx >= 0`` and ``z + a dz >= 0`` (``x, z > 0``), as a host
    number (``inf`` if no component decreases): ``-1 / min_i(dx_i / x_i, dz_i / z_i)``."""
    worst = float(torch.minimum(dx / x, dz / z).min())
    return -1.0 / worst if worst < 0.0 else math.inf


@dataclass(frozen=True)
class _OrthantNewton:
    """Newton system of a primal-dual interior-point method on ``x >= 0``: stationarity
    ``H dx - dlam 1 - dz = -r_d`` (``dlam`` only with the constraint ``1^T x = 1``, whose
    residual is the host number ``r_p``), complementarity ``z dx + x dz = -r_c``, with
    ``H + diag(z / x)`` factorised once in ``solve``.

    Scalars (step lengths, ``mu``, ``dlam``) are host numbers: on the CPU a read costs less
    than the tensor operations it replaces (one K x K problem makes about 60 operations per
    iteration instead of 120); on an accelerator each is a synchronisation.
    """

    solve: Callable[[Tensor], Tensor]
    x: Tensor
    z: Tensor
    r_d: Tensor
    r_p: float | None

    def direction(
        self, r_c: Tensor, neg_r_d: Tensor, neg_inv_x: Tensor
    ) -> tuple[Tensor, float, Tensor]:
        """(dx, dlam, dz) for the complementarity residual ``r_c``, given ``-r_d`` and
        ``-1 / x`` (shared by the predictor and the corrector)."""
        rhs = torch.addcmul(neg_r_d, r_c, neg_inv_x)  # -r_d - r_c / x
        if self.r_p is None:
            dx = self.solve(rhs.unsqueeze(1)).squeeze(1)
            dlam = 0.0
        else:
            sol = self.solve(torch.stack([rhs, torch.ones_like(rhs)], dim=1))
            s_rhs, s_ones = sol.sum(dim=0).tolist()
            dlam = (-self.r_p - s_rhs) / s_ones
            dx = torch.add(sol[:, 0], sol[:, 1], alpha=dlam)
        return dx, dlam, torch.addcmul(r_c, self.z, dx).mul_(neg_inv_x)

    def mehrotra(self) -> tuple[float, Tensor, float, Tensor]:
        """Mehrotra's predictor-corrector: (step, dx, dlam, dz)."""
        x, z = self.x, self.z
        k = x.shape[0]
        neg_r_d, neg_inv_x = self.r_d.neg(), torch.reciprocal(x).neg_()
        xz = x * z
        mu = float(xz.sum()) / k
        dx, _, dz = self.direction(xz, neg_r_d, neg_inv_x)
        step = min(_boundary_step(x, dx, z, dz), 1.0)
        mu_aff = float(torch.dot(torch.add(x, dx, alpha=step), torch.add(z, dz, alpha=step))) / k
        centering = min(max(mu_aff / mu, 0.0), 1.0) ** 3 if mu > 0.0 else 0.0
        r_c = torch.addcmul(xz, dx, dz).sub_(centering * mu)
        dx, dlam, dz = self.direction(r_c, neg_r_d, neg_inv_x)
        step = min(_STEP_TO_BOUNDARY * _boundary_step(x, dx, z, dz), 1.0)
        return step, dx, dlam, dz


def _spd_solver(m: Tensor) -> Callable[[Tensor], Tensor] | None:
    """A solver for the symmetric positive definite ``m``: Cholesky, or a Jacobi-scaled LU
    where Cholesky breaks down on rounding (interior-point matrices near convergence);
    None if both fail."""
    factor, info = torch.linalg.cholesky_ex(m)
    if int(info) == 0:
        return lambda rhs: cholesky_apply(factor, rhs)
    sc = m.diagonal().abs().clamp_min(torch.finfo(m.dtype).tiny).rsqrt()
    lu, piv, info = torch.linalg.lu_factor_ex(m * torch.outer(sc, sc))
    if int(info) != 0 or not bool(torch.isfinite(lu).all()):
        return None
    return lambda rhs: torch.linalg.lu_solve(lu, piv, rhs * sc.unsqueeze(1)) * sc.unsqueeze(1)


def _projection(q: Tensor, lin: Tensor, tol: float, max_iter: int) -> tuple[Tensor, int]:
    """``argmin_{mu >= 0} mu^T Q mu / 2 + lin^T mu`` by a primal-dual interior-point method
    (Mehrotra predictor-corrector). Returns (mu, iterations)."""
    unit = lin.abs().max().clamp_min(torch.finfo(q.dtype).tiny)
    p = lin / unit  # solve for mu / unit
    x = torch.ones_like(p)
    z = torch.ones_like(p)
    it = 0
    while it < max_iter:
        r_d = q @ x + p - z
        if float(torch.maximum(r_d.abs().max(), (x @ z) / x.shape[0])) <= tol:
            break
        solve = _spd_solver(q + torch.diag(z / x))
        if solve is None:
            break
        it += 1
        step, dx, _, dz = _OrthantNewton(solve, x, z, r_d, None).mehrotra()
        x = torch.add(x, dx, alpha=step)
        z = torch.add(z, dz, alpha=step)
    return x * unit, it
