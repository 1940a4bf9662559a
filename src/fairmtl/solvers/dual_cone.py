"""Projection onto the dual cone of the task gradients, in the weights (UPGrad's sub-problem).

For a Jacobian ``J`` (K x m) with Gram matrix ``A = J J^T``, the projection of ``J^T u``
onto the dual cone ``{x : J x >= 0}`` of the rows is ``J^T v`` with

    v = argmin_{v >= u} v^T A v                      (Quinton & Rey 2024, Proposition 1)

(Moreau's decomposition: ``J^T (v - u)``, ``v - u >= 0``, is the projection of ``-J^T u``
onto the cone spanned by the rows). UPGrad needs ``u = e_1, ..., e_K``. This module solves
a batch of such box-bounded QPs from the Gram matrix alone, in float64 on its device:

1. a primal-dual interior-point method (Mehrotra's predictor-corrector) brings every
   problem close to its solution, all problems advancing together with one batched
   K x K Cholesky factorisation per iteration (problems leave the batch as they converge);
2. a primal active-set method (Nocedal & Wright, *Numerical Optimization*, Algorithm 16.3),
   started on the active bounds the interior point has identified, finishes exactly:
   usually one step, a K x K solve on the free variables.

Two exact changes of variable make the problems scale-free. With ``d_j = sqrt(A_jj)`` (the
gradient norms) and ``C = D^{-1} A D^{-1}`` (the cosines, unit diagonal), ``s = D v`` turns
problem ``u`` into ``min s^T C s, s >= D u``, and each problem is divided by its largest
bound ``max_j d_j u_j`` (if that is <= 0, ``s = 0`` is the solution). Whole-matrix scales
and per-task scales over any number of decades leave the iteration unchanged. A task with
a zero gradient (``A_jj = 0``) drops out of the objective; its weight is set to
``max(u_j, 0)`` (the smallest admissible magnitude).

On a rank-deficient ``A`` the weights ``v`` may be non-unique (the projection ``J^T v`` is
unique). The linear systems then get a ridge of ``1e-12`` (relative to the unit diagonal
of ``C``) that only stabilises the linear algebra: the residuals driven to zero are those
of the unregularised problem, so the solution is not biased.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from fairmtl.solvers._gram import SolverInfo, check_gram, cholesky_apply, single_threaded

_STEP_TO_BOUNDARY = 0.99
_RIDGE = 1e-12  # added to the unit-diagonal scaled matrices before factorising

_REFINE = 2  # iterative-refinement sweeps of a reduced solve
_REDUCED_TOL = 1e-14  # relative residual of a reduced solve above which eigh takes over
_ZERO_STEP = 1e-15  # a step component this small (relative) does not block
_MULTIPLIER_TOL = 1e-14  # a multiplier above -tol (relative) counts as non-negative


@dataclass(frozen=True)
class DualConeSolution:
    """``weights`` (B, K): row ``p`` solves ``min v^T A v, v >= lower[p]``; and a diagnostic.

    ``info.iterations`` counts interior-point plus active-set iterations;
    ``info.backward_error`` is the largest relative KKT residual over the problems (see
    :func:`project_dual_cone`).
    """

    weights: Tensor
    info: SolverInfo


_Factor = tuple[Tensor, Tensor | None]


def _factor(m: Tensor, host_checks: bool = True) -> _Factor:
    """Batched Cholesky of the symmetric positive definite ``m``; batched LU if it breaks down
    (rounding-level negative eigenvalues of a singular Gram matrix formed in float32).
    Without ``host_checks`` (accelerators) the LU is always used and no error code is read:
    no synchronisation."""
    if host_checks:
        chol, info = torch.linalg.cholesky_ex(m)
        if not bool(info.any()):
            return chol, None
    lu, piv, _ = torch.linalg.lu_factor_ex(m)
    return lu, piv


def _solve(f: _Factor, rhs: Tensor) -> Tensor:
    """Solve with a :func:`_factor` result for a batch of right-hand sides (B, K)."""
    mat, piv = f
    if piv is None:
        return cholesky_apply(mat, rhs.unsqueeze(-1)).squeeze(-1)
    return torch.linalg.lu_solve(mat, piv, rhs.unsqueeze(-1)).squeeze(-1)


def _max_step(x: Tensor, dx: Tensor, z: Tensor, dz: Tensor) -> Tensor:
    """Per problem, the largest t in (0, 1] keeping x + t dx >= (1 - tau) x and likewise for
    z (x, z > 0): ``t = tau / max(tau, -min_j(dx_j / x_j, dz_j / z_j))``, shape (B, 1)."""
    worst = torch.minimum((dx / x).amin(dim=1, keepdim=True), (dz / z).amin(dim=1, keepdim=True))
    return worst.neg_().clamp_min_(_STEP_TO_BOUNDARY).reciprocal_().mul_(_STEP_TO_BOUNDARY)


def kkt_residual(c: Tensor, s: Tensor, b: Tensor) -> Tensor:
    """Relative KKT residual (B,) of the problems ``min s^T C s, s >= b`` (rows of s and b).

    With the slack ``x = s - b`` and the multiplier ``z = C s``, the optimality conditions
    are ``x >= 0``, ``z >= 0`` and ``min(x_j, z_j) = 0``. The residual is
    ``max_j max(-x_j, -z_j, min(|x_j|, |z_j|)) / (1 + max_j |s_j|)``: zero exactly at a
    solution, and the size of the perturbation of ``b`` and of ``C s`` that makes ``s``
    exact, relative to the rounding level of ``C s``.
    """
    x = s - b
    z = s @ c  # C is symmetric: the rows of s @ C are the vectors C s
    viol = torch.maximum(torch.maximum(-x, -z).clamp_min(0.0), torch.minimum(x.abs(), z.abs()))
    return viol.amax(dim=1) / (1.0 + s.abs().amax(dim=1))


def _interior_point(
    c: Tensor, b: Tensor, rows: Tensor, tol: float, max_iter: int, check_every: int = 1
) -> tuple[Tensor, Tensor, Tensor, int, bool]:
    """Mehrotra predictor-corrector on ``min 1/2 s^T C s, s >= b`` for the problems ``rows``.

    Iterates: ``s``, the slack ``x = s - b > 0`` (updated alongside ``s`` rather than
    recomputed, so a bound far below the solution costs no precision in ``s``) and the
    multiplier ``z > 0``; residuals: the dual one ``r_d = C s - z`` and the complementarity
    ``x z``. The Newton step solves ``(C + diag(z / x)) ds = -r_d - r_c / x`` (one
    factorisation for the predictor and the corrector); a common primal-dual step length
    keeps ``r_d`` decreasing in proportion. It starts from ``s = max(b, 0) + 1``, ``z = 1``.
    A problem leaves the batch once ``|r_d|`` and ``x z`` are below ``tol (1 + max|s|)``,
    tested every ``check_every`` iterations (the only host reads of the loop when it is
    above 1: the factorisation is then always an LU, whose error code is not read).
    Returns ``(s, x, z, iterations, converged)``.
    """
    c_ridge = c + _RIDGE * torch.eye(c.shape[0], dtype=c.dtype, device=c.device)
    s = b.clamp_min(0.0) + 1.0
    x = (-b).clamp_min(0.0) + 1.0
    z = torch.ones_like(b)
    everyone = rows.numel() == b.shape[0]
    it = 0
    while rows.numel() > 0 and it < max_iter:
        it += 1
        if everyone:
            ss, xs, zs = s, x, z
        else:
            ss, xs, zs = s[rows], x[rows], z[rows]
        r_d = torch.matmul(ss, c).sub_(zs)
        xz = xs * zs
        mu = xz.mean(dim=1, keepdim=True)
        zx = zs / xs
        f = _factor(torch.diag_embed(zx).add_(c_ridge), host_checks=check_every == 1)

        dx = _solve(f, -r_d - zs)  # affine predictor: r_c = x z
        dz = -zs - zx * dx
        t = _max_step(xs, dx, zs, dz)
        mu_aff = ((xs + t * dx) * (zs + t * dz)).mean(dim=1, keepdim=True)
        sigma = (mu_aff / mu).clamp_(0.0, 1.0) ** 3
        r_c = (xz + dx * dz - sigma * mu) / xs
        dx = _solve(f, -r_d - r_c)
        dz = -r_c - zx * dx
        t = _max_step(xs, dx, zs, dz)
        ss = ss + t * dx
        xs = xs + t * dx
        zs = zs + t * dz

        if everyone:
            s, x, z = ss, xs, zs
        else:
            s[rows], x[rows], z[rows] = ss, xs, zs
        if it % check_every:
            continue
        n = 1.0 + ss.abs().amax(dim=1)
        r_d = torch.matmul(ss, c).sub_(zs).abs().amax(dim=1)
        done = (r_d <= tol * n) & ((xs * zs).amax(dim=1) <= tol * n)
        if bool(done.any()):
            rows = rows[~done]
            if everyone:
                s, x, z, everyone = s.clone(), x.clone(), z.clone(), False
    return s, x, z, it, rows.numel() == 0


def _reduced_step(c: Tensor, s: Tensor, free: Tensor) -> Tensor:
    """Per problem, the step ``p`` (zero off the free set F) minimising ``(s + p)^T C (s + p)``:
    ``C_FF p_F = -(C s)_F``.

    ``(C s)_F`` lies in the range of ``C_FF`` (``C = R^T R`` gives ``(C s)_F = R_F^T R s``):
    the system is consistent even when ``C_FF`` is singular. It is solved by a factorisation
    with a ``1e-12`` ridge and iterative refinement; where that leaves a residual above
    rounding (an eigenvalue of ``C_FF`` near the ridge, e.g. nearly opposite gradients), by
    the pseudo-inverse from an eigendecomposition, neglecting eigenvalues below
    ``K eps max(1, lambda_max)``: the minimum-norm step, which never grows ``s`` along
    (numerically) null directions the objective does not see.
    """
    k = c.shape[0]
    f = free.to(c.dtype)
    m = c * (f.unsqueeze(2) * f.unsqueeze(1)) + torch.diag_embed(1.0 - f)
    fac = _factor(m + _RIDGE * torch.eye(k, dtype=c.dtype, device=c.device))
    p = torch.zeros_like(s)
    for _ in range(_REFINE):
        p = p - _solve(fac, ((s + p) @ c) * f) * f
    res = (((s + p) @ c) * f).abs().amax(dim=1)
    bad = res > _REDUCED_TOL * (1.0 + (s + p).abs().amax(dim=1))
    if bool(bad.any()):
        idx = bad.nonzero().squeeze(1)
        lam, vec = torch.linalg.eigh(m[idx])
        cut = k * torch.finfo(c.dtype).eps * lam[:, -1:].clamp_min(1.0)
        inv = torch.where(lam > cut, 1.0 / torch.where(lam > cut, lam, 1.0), 0.0)
        rhs = (s[idx] @ c) * f[idx]
        coef = torch.matmul(rhs.unsqueeze(1), vec).squeeze(1) * inv
        p[idx] = -torch.matmul(vec, coef.unsqueeze(-1)).squeeze(-1) * f[idx]
    return p


def _active_set(
    c: Tensor, b: Tensor, s: Tensor, work: Tensor, rows: Tensor, max_iter: int
) -> tuple[Tensor, int, bool]:
    """Primal active-set method for the problems ``rows``, from a feasible ``s`` (s >= b) and
    a working set ``work`` of bounds held at ``s_j = b_j``.

    Each iteration, every problem still in the batch moves towards the minimiser over its
    free variables: it stops at the first bound that blocks (which joins the working set)
    or, at the minimiser, releases the bound with the most negative multiplier
    ``(C s)_j``, or leaves the batch (all multipliers non-negative: optimal).
    """
    s = torch.where(work, b, s)
    work = work.clone()
    it = 0
    while rows.numel() > 0 and it < max_iter:
        it += 1
        ss, bs, ws = s[rows], b[rows], work[rows]
        free = ~ws
        p = _reduced_step(c, ss, free)
        n = 1.0 + ss.abs().amax(dim=1)
        blocking = free & (p < -_ZERO_STEP * n.unsqueeze(1))
        ratio = torch.where(blocking, (bs - ss) / torch.where(blocking, p, -1.0), 2.0)
        alpha, j_block = ratio.clamp_min(0.0).min(dim=1)
        blocked = alpha < 1.0
        ss = torch.maximum(ss + torch.where(blocked, alpha, 1.0).unsqueeze(1) * p, bs)
        z = ss @ c
        z_min, j_release = torch.where(ws, z, float("inf")).min(dim=1)
        release = ~blocked & (z_min < -_MULTIPLIER_TOL * n)
        # The blocking bound joins, the released one leaves (one-hot masks: no host read).
        tasks = torch.arange(ws.shape[1], device=ws.device)
        ws = ws | (blocked.unsqueeze(1) & (tasks == j_block.unsqueeze(1)))
        ws = ws & ~(release.unsqueeze(1) & (tasks == j_release.unsqueeze(1)))
        s[rows] = torch.where(ws, bs, ss)
        work[rows] = ws
        rows = rows[blocked | release]
    return s, it, rows.numel() == 0


def _two_tasks(a: Tensor) -> DualConeSolution:
    """Closed form for K = 2 and the identity bounds: ``v_i = e_i + max(0, -A_ij / A_jj) e_j``.

    At ``v = (1, t)``, ``t = -A_12 / A_22 > 0``: ``(A v)_2 = 0`` and
    ``(A v)_1 = A_11 - A_12^2 / A_22 >= 0`` (Cauchy-Schwarz) with the first bound active;
    for ``A_12 >= 0``, ``v = e_1`` has ``A v = (A_11, A_12) >= 0``. Both satisfy the KKT
    conditions; a zero ``A_jj`` (zero gradient) gives ``t = 0``.
    """
    diag = a.diagonal()
    safe = torch.where(diag > 0, diag, torch.ones_like(diag))
    t = torch.where(diag > 0, (-a[0, 1] / safe).clamp_min(0.0), torch.zeros_like(diag))
    v = torch.stack(
        [torch.stack([torch.ones_like(t[1]), t[1]]), torch.stack([t[0], torch.ones_like(t[0])])]
    )
    return DualConeSolution(v, SolverInfo(0, 0.0, 0.0, True, bool((diag <= 0).all())))


def project_dual_cone(
    gram: Tensor,
    lower: Tensor | None = None,
    *,
    tol: float = 1e-9,
    max_iter: int = 100,
    check_every: int | None = None,
) -> DualConeSolution:
    """Solve ``v_p = argmin_{v >= u_p} v^T A v`` for a batch of lower bounds ``u_p``.

    ``J^T v_p`` is the projection of ``J^T u_p`` onto the dual cone ``{x : J x >= 0}``
    (Quinton & Rey 2024, Proposition 1); with the default ``lower`` (the identity), row
    ``i`` gives the projection of the i-th task gradient, as UPGrad needs.

    Args:
        gram: (K, K) symmetric positive semi-definite Gram matrix ``A = J J^T``.
        lower: (B, K) or (K,) finite lower bounds ``u``; default the K x K identity.
        tol: interior-point tolerance on the relative dual residual and complementarity
            before the exact active-set finish (the answer's accuracy does not depend on it
            unless the finish fails, see ``info``).
        max_iter: maximum iterations of each phase.
        check_every: interior-point iterations between convergence tests (host reads):
            default 1 on CPU (converged problems leave the batch at once) and 4 on
            accelerators, where each test is a synchronisation.

    Returns:
        :class:`DualConeSolution` with ``weights`` (B, K) in float64 on ``gram``'s device
        (shape (K,) if ``lower`` was a vector). ``info.backward_error`` is the largest
        :func:`kkt_residual` of the scaled problems (s = D v / max_j d_j u_j); it is at
        rounding level (~1e-16) unless the input is degenerate to rounding.

    On the CPU the iterations run with one intra-op thread (restored on return), see
    :func:`single_threaded`.
    """
    a = check_gram(gram)
    k = a.shape[0]
    if lower is None:
        u = torch.eye(k, dtype=a.dtype, device=a.device)
    else:
        if not isinstance(lower, Tensor) or lower.ndim not in (1, 2) or lower.shape[-1] != k:
            shape = tuple(lower.shape) if isinstance(lower, Tensor) else type(lower).__name__
            raise ValueError(f"lower must have shape (B, {k}) or ({k},), got {shape}")
        u = lower.detach().to(device=a.device, dtype=a.dtype)
        if not bool(torch.isfinite(u).all()):
            raise ValueError("lower must be finite")
    vector = u.ndim == 1
    u = u.reshape(-1, k)
    if k == 2 and lower is None:
        return _two_tasks(a)

    diag = a.diagonal().clamp_min(0.0)
    nonzero = diag > 0
    if not bool(nonzero.any()):
        v = u.clamp_min(0.0)
        return DualConeSolution(v[0] if vector else v, SolverInfo(0, 0.0, 0.0, True, True))

    # Scaled problems: min s^T C s, s >= b, C with unit diagonal, max_j b_j = 1.
    d = torch.where(nonzero, diag.sqrt(), torch.ones_like(diag))
    c = (a / torch.outer(d, d)).clamp(-1.0, 1.0)
    c = torch.where(torch.outer(nonzero, nonzero), c, torch.zeros_like(c))
    c.diagonal().fill_(1.0)  # a zero task becomes a decoupled variable with s_j = 0 optimal
    b = u * torch.where(nonzero, d, torch.zeros_like(d))
    scale = b.amax(dim=1, keepdim=True)  # the largest positive bound sets the scale
    b0 = b / torch.where(scale > 0, scale, torch.ones_like(scale))
    b = torch.where(nonzero, b0, -1.0)  # keep a zero task's variable strictly free
    trivial = b.amax(dim=1) <= 0  # s = 0 is feasible and optimal
    at_bound = (torch.matmul(b0, c) >= 0).all(dim=1) & ~trivial  # s = b0 is optimal
    rows = (~trivial & ~at_bound).nonzero().squeeze(1)

    with single_threaded(c.device):
        every = check_every if check_every is not None else (1 if c.is_cpu else 4)
        s, x, z, it, converged = _interior_point(c, b, rows, tol, max_iter, every)
        s_as, it_as, as_done = _active_set(c, b, s, x <= z, rows, max_iter)
    res = kkt_residual(c, s, b)
    res_as = kkt_residual(c, s_as, b)
    better = res_as <= res
    s = torch.where(better.unsqueeze(1), s_as, s)
    res = torch.where(better, res_as, res)
    s = torch.where(at_bound.unsqueeze(1), b0, s)
    s = torch.where(trivial.unsqueeze(1), 0.0, s)
    res = torch.where(trivial | at_bound, 0.0, res)
    berr = float(res.max())

    v = torch.where(nonzero, s * scale / d, u.clamp_min(0.0))
    info = SolverInfo(it + it_as, berr, 0.0, converged or as_done)
    return DualConeSolution(v[0] if vector else v, info)
