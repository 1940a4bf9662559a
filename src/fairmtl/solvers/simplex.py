"""Min-norm point of the convex hull of the task gradients (MGDA's sub-problem).

Solves ``min_{u in simplex} u^T A u`` for a PSD Gram matrix ``A`` by a primal-dual
interior-point method with Mehrotra's predictor-corrector, entirely in torch on the
Gram matrix's device. It replaces the Frank-Wolfe loop of Sener & Koltun (2018), whose
250 iterations at tolerance 1e-5 reach only a few digits: here the duality gap is driven
to ~1e-13 of the scale of ``A``, typically in 10-25 iterations of one K x K solve each.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from fairmtl.solvers._gram import SolverInfo, check_gram

_STEP_TO_BOUNDARY = 0.995


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
    ones: Tensor

    def direction(self, r_c: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(du, dy, dz) for the complementarity residual ``r_c``."""
        rhs = torch.stack([-self.r_d - r_c / self.u, self.ones], dim=1)
        x = torch.linalg.lu_solve(self.lu[0], self.lu[1], rhs)
        dy = (-self.r_p - x[:, 0].sum()) / x[:, 1].sum()
        du = x[:, 0] + dy * x[:, 1]
        dz = (-r_c - self.z * du) / self.u
        return du, dy, dz


def min_norm_simplex(
    gram: Tensor, *, tol: float = 1e-13, max_iter: int = 100, check_every: int = 4
) -> SimplexSolution:
    """Minimise ``u^T A u`` over the probability simplex (Sener & Koltun 2018, eq. 3).

    Args:
        gram: (K, K) symmetric positive semi-definite Gram matrix ``A = G^T G``.
        tol: stopping tolerance on the relative duality gap and KKT residuals.
        max_iter: maximum interior-point iterations.
        check_every: test convergence every this many iterations, so the loop makes no
            host round trip in between.

    Returns:
        :class:`SimplexSolution` with weights in float64 on ``gram``'s device. The
        direction ``G u`` is unique even when ``u`` is not (rank-deficient ``A``).
    """
    a = check_gram(gram)
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
    q = a / scale
    eye = torch.eye(k, dtype=a.dtype, device=a.device)
    jitter = 1e-14 * eye

    u = ones / k
    qu = q @ u
    y = qu.min() - 1.0
    z = qu - y

    it, converged = 0, False
    while it < max_iter:
        for _ in range(check_every):
            it += 1
            r_d = q @ u - y - z
            r_p = u.sum() - 1.0
            mu = (u @ z) / k
            lu = torch.linalg.lu_factor(q + torch.diag(z / u) + jitter)
            step = _NewtonSystem(lu, r_d, r_p, u, z, ones)
            du, _, dz = step.direction(u * z)
            ap, ad = _max_step(u, du), _max_step(z, dz)
            mu_aff = ((u + ap * du) @ (z + ad * dz)) / k
            sigma = (mu_aff / mu).clamp(0.0, 1.0) ** 3
            du, dy, dz = step.direction(u * z + du * dz - sigma * mu)
            ap, ad = _max_step(u, du), _max_step(z, dz)
            u = u + ap * du
            y = y + ad * dy
            z = z + ad * dz
        gap = (u @ z) / (1.0 + (u @ (q @ u)))
        feas = (q @ u - y - z).abs().max() + (u.sum() - 1.0).abs()
        if bool((gap <= tol) & (feas <= tol)):
            converged = True
            break
    u = u.clamp_min(0.0)
    u = u / u.sum()
    value = u @ (a @ u)
    # Backward error of the KKT conditions: (A u)_i >= value on every i, = value on the support.
    au = a @ u
    viol = torch.clamp(value - au, min=0.0).max() + ((au - value) * u).abs().max()
    berr = float(viol / scale)
    return SimplexSolution(u, value, SolverInfo(it, berr, 0.0, converged))


def _two_tasks(a: Tensor) -> SimplexSolution:
    """Closed form for K = 2 (Sener & Koltun 2018, Algorithm 1's line search):
    ``u_1 = clip((A_22 - A_12) / (A_11 - 2 A_12 + A_22), 0, 1)``."""
    denom = a[0, 0] - 2.0 * a[0, 1] + a[1, 1]
    num = a[1, 1] - a[0, 1]
    u1 = torch.where(denom > 0, num / torch.where(denom > 0, denom, 1.0), 0.5).clamp(0.0, 1.0)
    u = torch.stack([u1, 1.0 - u1])
    return SimplexSolution(u, u @ (a @ u), SolverInfo(0, 0.0, 0.0, True))
