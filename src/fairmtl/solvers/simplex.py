"""Min-norm point of the convex hull of the task gradients (MGDA's sub-problem).

Solves ``min_{u in simplex} u^T A u`` for a PSD Gram matrix ``A`` by a primal-dual
interior-point method with Mehrotra's predictor-corrector, entirely in torch on the
Gram matrix's device. It replaces the Frank-Wolfe loop of Sener & Koltun (2018), whose
250 iterations at tolerance 1e-5 reach only a few digits: here the duality gap is driven
to ~1e-13 of the scale of ``A``, typically in 10-25 iterations of one K x K solve each.
On the CPU (a test every iteration) the support each iterate suggests (``v_i > z_i``) is
also solved exactly, in closed form on the support, and taken when the same test
certifies it: the active-set crossover of :mod:`fairmtl.solvers._active_set`, which
usually ends the solve after a few iterations.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from fairmtl.solvers._active_set import SupportTrials, active_set, cholesky_solve_on
from fairmtl.solvers._gram import SolverInfo, check_gram

_STEP_TO_BOUNDARY = 0.995
_SUPPORT_TRIES = 6  # iterates whose (new) support is tried (_crossover)


@dataclass(frozen=True)
class SimplexSolution:
    """``weights`` (K,) on the simplex, ``value`` = weights^T A weights, and a diagnostic."""

    weights: Tensor
    value: Tensor
    info: SolverInfo


def _max_step(x: Tensor, dx: Tensor) -> Tensor:
    """Largest t in (0, 1] with x + t dx >= (1 - tau) x, elementwise (x > 0)."""
    ratio = torch.where(dx < 0, -x / dx, torch.full_like(x, float("inf")))
    return torch.clamp(_STEP_TO_BOUNDARY * ratio.min(), max=1.0)


@dataclass(frozen=True)
class _NewtonSystem:
    """The interior-point Newton system at one iterate, factorised once for both solves."""

    lu: tuple[Tensor, Tensor]
    r_d: Tensor
    r_p: Tensor
    u: Tensor
    z: Tensor
    c: Tensor  # the equality constraint c^T u = 1

    def direction(self, r_c: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(du, dy, dz) for the complementarity residual ``r_c``."""
        rhs = torch.stack([-self.r_d - r_c / self.u, self.c], dim=1)
        x = torch.linalg.lu_solve(self.lu[0], self.lu[1], rhs)
        dy = (-self.r_p - self.c @ x[:, 0]) / (self.c @ x[:, 1])
        du = x[:, 0] + dy * x[:, 1]
        dz = (-r_c - self.z * du) / self.u
        return du, dy, dz


def min_norm_simplex(
    gram: Tensor, *, tol: float = 1e-13, max_iter: int = 100, check_every: int | None = None
) -> SimplexSolution:
    """Minimise ``u^T A u`` over the probability simplex (Sener & Koltun 2018, eq. 3).

    Args:
        gram: (K, K) symmetric positive semi-definite Gram matrix ``A = G^T G``.
        tol: stopping tolerance on the relative duality gap and KKT residuals.
        max_iter: maximum interior-point iterations.
        check_every: test convergence every this many iterations, so the loop makes no
            host round trip in between: default 1 on CPU (where a test costs nothing) and 4
            on accelerators. At 1, the support of each iterate is also tried exactly
            (the active-set crossover in the module docstring).

    Returns:
        :class:`SimplexSolution` with weights in float64 on ``gram``'s device. The
        direction ``G u`` is unique even when ``u`` is not (rank-deficient ``A``).
    """
    with torch.inference_mode():  # less dispatch overhead on these tiny tensors
        a = check_gram(gram)
        every = check_every if check_every is not None else (1 if a.is_cpu else 4)
        sol = _solve(a, tol, max_iter, every)
    # Outside inference mode, so that the results can enter autograd graphs.
    return SimplexSolution(sol.weights.clone(), sol.value.clone(), sol.info)


def _solve(a: Tensor, tol: float, max_iter: int, check_every: int) -> SimplexSolution:
    k = a.shape[0]
    ones = torch.ones(k, dtype=a.dtype, device=a.device)
    if k == 1:
        return SimplexSolution(
            ones, a[0, 0].clone(), SolverInfo(0, 0.0, 0.0, True, bool(a[0, 0] == 0))
        )
    scale = a.diagonal().max()
    if bool(scale <= 0):
        u = ones / k
        return SimplexSolution(
            u, torch.zeros((), dtype=a.dtype, device=a.device), SolverInfo(0, 0.0, 0.0, True, True)
        )
    if k == 2:
        return _two_tasks(a)
    norms = a.diagonal().clamp(min=0).sqrt()
    if bool((norms == 0).any()):  # a zero gradient is the min-norm point
        u = (norms == 0).to(a.dtype)
        u = u / u.sum()
        return SimplexSolution(
            u, torch.zeros((), dtype=a.dtype, device=a.device), SolverInfo(0, 0.0, 0.0, True)
        )
    # Scaled variables u_i = c_i v_i, c_i = min_j n_j / n_i (n_i = ||g_i||): the objective
    # becomes v^T Q v with Q the correlation matrix (unit diagonal) and the simplex the
    # slab c^T v = 1, v >= 0. Exact, and well scaled even when the gradient norms span
    # 30 decades (where the unscaled problem's normwise accuracy is meaningless).
    c = norms.min() / norms
    q = a / (norms[:, None] * norms[None, :])
    eye = torch.eye(k, dtype=a.dtype, device=a.device)
    jitter = 1e-14 * eye

    v = c / (c @ c)
    qv = q @ v
    y = (qv / c).min() - 1.0
    z = qv - y * c

    it, converged = 0, False
    trials = SupportTrials(_SUPPORT_TRIES if check_every == 1 else 0)
    while it < max_iter:
        for _ in range(check_every):
            it += 1
            r_d = q @ v - y * c - z
            r_p = c @ v - 1.0
            mu = (v @ z) / k
            # The _ex form checks no error code, hence no sync; q + diag(z / v) is positive
            # definite, and a breakdown would surface as the non-finite error below.
            lu, piv, _ = torch.linalg.lu_factor_ex(q + torch.diag(z / v) + jitter)
            step = _NewtonSystem((lu, piv), r_d, r_p, v, z, c)
            dv, _, dz = step.direction(v * z)
            ap, ad = _max_step(v, dv), _max_step(z, dz)
            mu_aff = ((v + ap * dv) @ (z + ad * dz)) / k
            sigma = (mu_aff / mu).clamp(0.0, 1.0) ** 3
            dv, dy, dz = step.direction(v * z + dv * dz - sigma * mu)
            ap, ad = _max_step(v, dv), _max_step(z, dz)
            v = v + ap * dv
            y = y + ad * dy
            z = z + ad * dz
        support = v > z
        if trials.new(support):  # the iterate's support, solved exactly (tried first: it
            exact = _crossover(q, c, support, tol)  # usually succeeds before the iterate)
            if exact is not None:
                v, y, z = exact
                converged = True
                break
        if _certified(q, c, v, y, z, tol):
            converged = True
            break
    u = (c * v).clamp_min(0.0)
    u = u / u.sum()
    value = u @ (a @ u)
    # Backward error of the KKT conditions, per task relative to ||g_i|| ||d||:
    # g_i . d >= ||d||^2 on every task, with equality on the support.
    au = a @ u
    rel = norms * value.clamp(min=0).sqrt()
    rel = torch.where(rel > 0, rel, norms.max() ** 2)
    viol = (torch.clamp(value - au, min=0.0) / rel).max() + ((au - value).abs() * u / rel).max()
    berr = float(viol)
    if not math.isfinite(berr):
        raise torch.linalg.LinAlgError(
            f"min_norm_simplex: the interior-point iteration broke down (K = {k})"
        )
    return SimplexSolution(u, value, SolverInfo(it, berr, 0.0, converged))


def _certified(q: Tensor, c: Tensor, v: Tensor, y: Tensor, z: Tensor, tol: float) -> bool:
    """The stopping test: relative duality gap and KKT residuals at most ``tol``."""
    gap = (v @ z) / (1.0 + (v @ (q @ v)))
    feas = (q @ v - y * c - z).abs().max() + (c @ v - 1.0).abs()
    return bool((gap <= tol) & (feas <= tol))


def _crossover(
    q: Tensor, c: Tensor, keep: Tensor, tol: float
) -> tuple[Tensor, Tensor, Tensor] | None:
    """The exact optimum ``(v, y, z)`` from the support ``keep`` of an iterate, if the
    stopping test certifies it, else None.

    On a support ``S`` the scaled problem ``min v^T Q v, c^T v = 1`` has
    ``Q_SS v_S = y c_S``, so ``v_S = y Q_SS^{-1} c_S`` with ``y = 1 / (c_S^T Q_SS^{-1} c_S)``
    (one Cholesky factorisation); the multipliers are ``z = Q v - y c``, and
    :func:`fairmtl.solvers._active_set.active_set` corrects the support.
    """
    y = 0.0  # of the latest face solved

    def face(index: Tensor) -> tuple[Tensor, Tensor] | None:
        nonlocal y
        sol = cholesky_solve_on(q, index, c[index].unsqueeze(1))
        if sol is None:
            return None
        u = sol.squeeze(1)
        denom = float(torch.dot(c[index], u))
        if not denom > 0.0:
            return None
        y = 1.0 / denom
        v = torch.zeros_like(c).index_copy_(0, index, u.mul_(y))
        return v, torch.mv(q, v).sub_(c, alpha=y)

    found = active_set(face, keep, tol)
    if found is None:
        return None
    v, multiplier = found
    y_t = torch.tensor(y, dtype=c.dtype, device=c.device)
    z = multiplier.clamp_min(0.0)
    return (v, y_t, z) if _certified(q, c, v, y_t, z, tol) else None


def _two_tasks(a: Tensor) -> SimplexSolution:
    """Closed form for K = 2 (Sener & Koltun 2018, Algorithm 1's line search):
    ``u_1 = clip((A_22 - A_12) / (A_11 - 2 A_12 + A_22), 0, 1)``."""
    denom = a[0, 0] - 2.0 * a[0, 1] + a[1, 1]
    safe = torch.where(denom > 0, denom, 1.0)
    # Both weights computed directly (not 1 - the other): exact even at extreme scales.
    u1 = torch.where(denom > 0, (a[1, 1] - a[0, 1]) / safe, 0.5).clamp(0.0, 1.0)
    u2 = torch.where(denom > 0, (a[0, 0] - a[0, 1]) / safe, 0.5).clamp(0.0, 1.0)
    u = torch.stack([u1, u2])
    u = u / u.sum()
    return SimplexSolution(u, u @ (a @ u), SolverInfo(0, 0.0, 0.0, True))
