"""CAGrad: the dual against SLSQP, KKT and duality certificates, the paper's guarantee, the
options, and the relation to TorchJD's implementation."""

from __future__ import annotations

import math
import statistics
import warnings

import numpy as np
import pytest
import torch
from adversarial import adversarial_cases, relative_error

import fairmtl
from fairmtl.aggregators.cagrad import CAGrad
from fairmtl.solvers.cagrad import solve_cagrad_dual

C = 0.4


def _normalised(a: np.ndarray) -> np.ndarray:
    """The Gram matrix divided by trace / K (SLSQP's tolerances are absolute)."""
    scale = np.trace(a) / a.shape[0]
    return a / scale if scale > 0 else a


def _objective(a: np.ndarray, w: np.ndarray, c: float) -> float:
    """CAGrad's dual objective F(w) = g_w . g0 + c ||g0|| ||g_w|| from the Gram matrix."""
    k = a.shape[0]
    g0_norm = math.sqrt(max(a.sum() / k**2, 0.0))
    return float(w @ a.sum(axis=1) / k + c * g0_norm * math.sqrt(max(w @ a @ w, 0.0)))


def _slsqp(a: np.ndarray, c: float, starts: list[np.ndarray]) -> tuple[float, bool]:
    """Best (objective, success) of scipy's SLSQP from several starting points."""
    optimize = pytest.importorskip("scipy.optimize")
    k = a.shape[0]
    b = a.sum(axis=1) / k
    s = c * math.sqrt(max(a.sum() / k**2, 0.0))
    ones = np.ones((1, k))

    def grad(w: np.ndarray) -> np.ndarray:
        norm = math.sqrt(max(w @ a @ w, 0.0))
        return b + (s / norm) * (a @ w) if norm > 0 else b

    best = (math.inf, False)
    for x0 in starts:
        res = optimize.minimize(
            lambda w: _objective(a, w, c),
            x0,
            jac=grad,
            method="SLSQP",
            bounds=[(0.0, 1.0)] * k,
            constraints=[{"type": "eq", "fun": lambda w: w.sum() - 1.0, "jac": lambda w: ones}],
            options={"ftol": 1e-15, "maxiter": 500},
        )
        value = _objective(a, np.clip(res.x, 0.0, None) / np.clip(res.x, 0.0, None).sum(), c)
        if value < best[0]:
            best = (value, bool(res.success))
    return best


def _starts(k: int) -> list[np.ndarray]:
    return [np.ones(k) / k] + [0.9 * np.eye(k)[i] + 0.1 / k for i in range(min(k, 2))]


def _random_gram(rng: np.random.Generator) -> tuple[np.ndarray, float]:
    """A Gram matrix with K in 2..40, full rank or rank-deficient, ill-conditioned,
    per-task scales over 6 decades, overall scale over 16 decades, and a c."""
    k = int(rng.integers(2, 41))
    rank = int(rng.integers(1, k + 6))
    jac = rng.standard_normal((k, rank)) * np.exp(rng.uniform(-7, 7, size=(k, 1)) / 2)
    if rng.random() < 0.3:  # ill-conditioned: singular values spread over 8 decades
        jac = jac @ np.diag(np.logspace(0, -8, rank))
    jac *= 10.0 ** rng.uniform(-8, 8)
    c = float(rng.choice([0.1, 0.4, 0.9, 2.0]))
    return jac @ jac.T, c


def test_dual_objective_is_optimal_against_slsqp_on_random_grams() -> None:
    rng = np.random.default_rng(2021)
    problems = [_random_gram(rng) for _ in range(200)]
    # All our solves first, then SLSQP's: interleaving torch and numpy/scipy calls makes
    # their thread pools fight over the cores.
    solutions = [solve_cagrad_dual(torch.tensor(a), c) for a, c in problems]
    worst, agree, at_zero = -math.inf, 0.0, 0
    for (a, c), sol in zip(problems, solutions):
        assert sol.info.converged, sol.info
        an = _normalised(a)  # objective in units of trace(A) / K
        ours = _objective(an, sol.weights.numpy(), c)
        ref, success = _slsqp(an, c, [np.ones(a.shape[0]) / a.shape[0]])  # the reference's start
        # At an optimum with g_w = 0 the Gram matrix fixes ||g_w|| only to ~sqrt(eps): the
        # objective there is meaningful to ~c * 1e-8, for SLSQP as for us.
        slack = 1e-9 + (c * 1e-8 if sol.at_zero else 0.0)
        assert ours <= ref + slack, (a.shape[0], c, ours, ref)
        worst = max(worst, ours - ref)
        at_zero += sol.at_zero
        if success:
            agree = max(agree, abs(ours - ref))
    assert agree <= 1e-6
    assert at_zero >= 5  # the degenerate path (optimum at g_w = 0) is exercised
    print(f"max objective gap ours - SLSQP: {worst:.2e} (trace/K units)")


@pytest.mark.parametrize("case", adversarial_cases(), ids=[n for n, _ in adversarial_cases()])
def test_adversarial_cases_are_finite_and_optimal_against_slsqp(case) -> None:
    _, jac = case
    sol = solve_cagrad_dual(jac @ jac.T, C)
    for x in (sol.weights, sol.coefficients, sol.value):
        assert x.dtype == jac.dtype and torch.isfinite(x).all()
    assert abs(float(sol.weights.double().sum()) - 1.0) < 1e-6 and (sol.weights >= 0).all()
    a = _normalised((jac.double() @ jac.double().T).numpy())
    if a.shape[0] == 1:
        return
    ours = _objective(a, sol.weights.double().numpy(), C)
    ref, _ = _slsqp(a, C, _starts(a.shape[0]))
    # float32 cases solve the float32 Gram matrix: its rounding moves the optimum ~1e-7.
    tol = 1e-9 if jac.dtype == torch.float64 else 1e-6
    assert ours <= ref + tol


def _kkt_residuals(g: torch.Tensor, w: torch.Tensor, c: float) -> tuple[float, float]:
    """Stationarity and complementarity of the dual's KKT conditions at w (``g_w != 0``):
    grad F(w) >= lam on every task, = lam on the support, lam = F(w) (homogeneity)."""
    a = g @ g.T
    k = g.shape[0]
    s = c * (a.sum() / k**2).sqrt()
    grad = a.sum(dim=1) / k + s * (a @ w) / (w @ a @ w).sqrt()
    lam = w @ grad
    return float((lam - grad).clamp_min(0).max()), float((w * (grad - lam)).abs().max())


@pytest.mark.parametrize("seed", range(6))
def test_weights_satisfy_the_kkt_conditions_and_duality_certifies_the_direction(seed) -> None:
    gen = torch.Generator().manual_seed(seed)
    k = 2 + 7 * seed
    g = torch.randn(k, 3 * k, dtype=torch.float64, generator=gen)
    g = g * torch.logspace(-1, 1, k, dtype=torch.float64)[:, None]
    c = [0.1, 0.4, 0.9, 1.5, 0.4, 3.0][seed]
    sol = solve_cagrad_dual(g @ g.T, c)
    w = sol.weights
    scale = float((g * g).sum() / k)
    assert (w >= 0).all() and abs(float(w.sum()) - 1) < 1e-12
    stationarity, complementarity = _kkt_residuals(g, w, c)
    assert stationarity <= 1e-10 * scale and complementarity <= 1e-10 * scale
    # The paper's d is primal feasible and its worst improvement equals F(w): strong duality,
    # which with weak duality proves both w and d optimal.
    d = CAGrad(c=c, rescale=0)(g)
    g0 = g.mean(dim=0)
    radius = c * float(g0.norm())
    assert float((d - g0).norm()) <= radius * (1 + 1e-10)
    assert float((g @ d).min()) >= float(sol.value) - 1e-10 * scale
    torch.testing.assert_close(sol.coefficients, 1 / k + radius / float(w @ g @ g.T @ w) ** 0.5 * w)


@pytest.mark.parametrize("seed", range(4))
def test_direction_maximises_the_worst_improvement_over_the_ball(seed) -> None:
    gen = torch.Generator().manual_seed(100 + seed)
    k, m = [(2, 3), (3, 10), (6, 8), (12, 40)][seed]
    g = torch.randn(k, m, dtype=torch.float64, generator=gen) + 0.3
    d = CAGrad(c=C, rescale=0)(g)
    g0 = g.mean(dim=0)
    radius = C * g0.norm()
    scale = float((g * g).sum() / k)
    # Random feasible points: directions in and out of the gradients' span, radii in [0, 1].
    u = torch.randn(4000, m, dtype=torch.float64, generator=gen)
    u = u / u.norm(dim=1, keepdim=True)
    rad = torch.rand(4000, 1, dtype=torch.float64, generator=gen) ** 0.25
    points = g0 + radius * rad * u
    worst_random = (points @ g.T).min(dim=1).values.max()
    best = (g @ d).min()
    assert float(best) >= float(worst_random) - 1e-12 * scale
    assert float(best) > float((g @ g0).min())  # strictly better than the mean gradient
    assert abs(float((d - g0).norm() / radius) - 1) < 1e-10  # on the boundary


def test_optimum_at_zero_combination_returns_a_non_conflicting_direction() -> None:
    # g, -g and h: g_w = 0 at w = (1/2, 1/2, 0) is optimal; the reference's d = g0 = h / 3
    # conflicts with g or -g, every optimal d has g . d = 0 and h . d >= 0.
    gen = torch.Generator().manual_seed(5)
    g, h = torch.randn(2, 7, dtype=torch.float64, generator=gen)
    jac = torch.stack([g, -g, h])
    sol = solve_cagrad_dual(jac @ jac.T, C)
    assert sol.at_zero and sol.info.converged
    d = CAGrad(c=C, rescale=0)(jac)
    g0 = jac.mean(dim=0)
    assert float((jac @ g0).min()) < -1e-3  # the mean gradient conflicts
    assert float((jac @ d).min()) >= -1e-10 * float(h @ h)
    assert float((d - g0).norm()) <= C * float(g0.norm()) * (1 + 1e-12)


def test_c_zero_is_the_mean_and_the_rescale_and_scale_options() -> None:
    g = torch.randn(5, 12, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    for rescale in (0, 1, 2):
        torch.testing.assert_close(CAGrad(c=0.0, rescale=rescale)(g), g.mean(dim=0))
    torch.testing.assert_close(CAGrad(c=0.0, scale=5)(g), g.sum(dim=0))
    paper = CAGrad(c=0.5, rescale=0)(g)
    torch.testing.assert_close(CAGrad(c=0.5)(g), paper / 1.25)
    torch.testing.assert_close(CAGrad(c=0.5, rescale=2)(g), paper / 1.5)
    torch.testing.assert_close(CAGrad(c=0.5, rescale=0, scale=5)(g), paper * 5)
    # K = 1: d = g0 + c ||g0|| g_1 / ||g_1|| = (1 + c) g_1.
    torch.testing.assert_close(CAGrad(c=0.5, rescale=0)(g[:1]), 1.5 * g[0])
    # The direction is scale-equivariant (the solver normalises the Gram matrix).
    torch.testing.assert_close(CAGrad()(g * 1e12), CAGrad()(g) * 1e12, rtol=1e-9, atol=0)


def test_zero_gradients_and_zero_mean() -> None:
    with pytest.warns(fairmtl.RegularizationWarning, match="zero"):
        assert torch.equal(CAGrad()(torch.zeros(3, 4)), torch.zeros(4))
    g = torch.tensor([[1.0, 2.0], [-1.0, -2.0]], dtype=torch.float64)  # g0 = 0: phi = 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert torch.equal(CAGrad()(g), torch.zeros(2, dtype=torch.float64))


def test_bad_options_are_clear_errors() -> None:
    for bad in (-0.1, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="c must"):
            CAGrad(c=bad)
    for bad_type in ("0.4", True, None):
        with pytest.raises(TypeError, match="c must"):
            CAGrad(c=bad_type)  # type: ignore[arg-type]
    for bad_rescale in (3, -1, 1.5, True, "1"):
        with pytest.raises(ValueError, match="rescale"):
            CAGrad(rescale=bad_rescale)  # type: ignore[arg-type]
    for bad_scale in (0.0, -1.0, float("inf")):
        with pytest.raises(ValueError, match="scale"):
            CAGrad(scale=bad_scale)


def test_float32_jacobian_and_make() -> None:
    g = torch.randn(6, 30, generator=torch.Generator().manual_seed(3))
    agg = fairmtl.make("cagrad", c=0.5)
    assert isinstance(agg, CAGrad) and agg.c == 0.5 and repr(agg) == "CAGrad(c=0.5)"
    assert repr(CAGrad(rescale=0, scale=3)) == "CAGrad(c=0.4, rescale=0, scale=3.0)"
    out = agg(g)
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    assert relative_error(out, CAGrad(c=0.5)(g.double())) <= 1e-5
    assert agg.last_info is not None and agg.last_info.converged


def test_torchjd_computes_the_papers_direction_with_an_inexact_solver() -> None:
    """TorchJD's ``CAGrad(c)`` returns the paper's ``d`` (our ``rescale=0``, ``scale=1``),
    with a generic solver and ``norm_eps`` added to ``||g_w||``: the directions agree to
    ~1e-4, and ours is at least as good on CAGrad's own criterion."""
    aggregation = pytest.importorskip("torchjd.aggregation")
    gen = torch.Generator().manual_seed(7)
    for k, m in [(2, 5), (3, 10), (5, 20), (8, 50), (10, 12)]:
        g = torch.randn(k, m, dtype=torch.float64, generator=gen)
        g = g * torch.logspace(-1, 1, k, dtype=torch.float64)[:, None]
        for c in (0.1, 0.4, 0.9):
            theirs = aggregation.CAGrad(c=c)(g)
            ours = CAGrad(c=c, rescale=0)(g)
            assert relative_error(ours, theirs) <= 1e-3
            g0 = g.mean(dim=0)
            radius = c * g0.norm()
            step = theirs - g0
            feasible = g0 + step * torch.clamp(radius / step.norm(), max=1.0)
            scale = float((g * g).sum() / k)
            assert float((g @ ours).min()) >= float((g @ feasible).min()) - 1e-12 * scale


def _worst_improvement(jac: torch.Tensor, d: torch.Tensor) -> float:
    return float((jac @ d).min())


def test_two_tasks_closed_form_is_certified_and_at_least_as_good_as_the_interior_point(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """K = 2 takes the closed form (no iteration) when its Frank-Wolfe gap certifies it; its
    direction is the interior-point method's, to the latter's accuracy, or better on
    CAGrad's criterion; end-point optima come out with an exactly zero weight."""
    import fairmtl.solvers.cagrad as module

    rng = np.random.default_rng(11)
    cases = []
    for _ in range(60):
        jac = rng.standard_normal((2, int(rng.integers(2, 8))))
        jac *= np.exp(rng.uniform(-6, 6, size=(2, 1)) / 2) * 10.0 ** rng.uniform(-6, 6)
        cases.append((torch.tensor(jac), float(rng.choice([0.1, 0.4, 0.9, 2.0]))))
    closed = [solve_cagrad_dual(j @ j.T, c) for j, c in cases]
    monkeypatch.setattr(module, "_two_tasks", lambda q, b, c: None)
    monkeypatch.setattr(module, "_SUPPORT_TRIES", 0)  # the interior point alone
    ipm = [solve_cagrad_dual(j @ j.T, c) for j, c in cases]
    ends = 0
    for (jac, c), ours, theirs in zip(cases, closed, ipm):
        assert ours.info.iterations == 0 and ours.info.converged and not ours.at_zero
        assert theirs.info.iterations > 0 and theirs.info.converged
        assert ours.info.backward_error <= theirs.info.backward_error + 1e-15
        d, d_ipm = ours.coefficients @ jac, theirs.coefficients @ jac
        assert relative_error(d, d_ipm) <= 1e-7
        scale = float((jac * jac).sum())
        assert _worst_improvement(jac, d) >= _worst_improvement(jac, d_ipm) - 1e-14 * scale
        ends += int((ours.weights == 0).any())
    assert ends >= 3  # the end-point branch (r^2 >= a2) is exercised


def test_two_tasks_parallel_gradients_fall_back_to_the_interior_point() -> None:
    # g and -2 g: F(1, 0) = (c - 1) ||g||^2 / 2 and F(0, 1) > 0 (normalised), so at c = 0.4
    # the end point w = (1, 0) is optimal (closed form), and at c = 1.5 the kink g_w = 0 at
    # w = (2/3, 1/3), where the closed form does not apply.
    g = torch.randn(6, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    jac = torch.stack([g, -2.0 * g])
    end = solve_cagrad_dual(jac @ jac.T, 0.4)
    assert end.info.iterations == 0 and not end.at_zero
    assert torch.equal(end.weights, torch.tensor([1.0, 0.0], dtype=torch.float64))
    kink = solve_cagrad_dual(jac @ jac.T, 1.5)
    assert kink.info.iterations > 0 and kink.at_zero and kink.info.converged
    torch.testing.assert_close(kink.weights, torch.tensor([2 / 3, 1 / 3], dtype=torch.float64))


def _ipm_only(monkeypatch: pytest.MonkeyPatch, gram: torch.Tensor, c: float):
    import fairmtl.solvers.cagrad as module

    with monkeypatch.context() as m:
        m.setattr(module, "_SUPPORT_TRIES", 0)
        return solve_cagrad_dual(gram, c)


def test_active_set_crossover_matches_the_interior_point_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The support of an early interior-point iterate, solved exactly (the active-set
    crossover), gives the interior point's direction, certified to the same tolerance, in a
    fraction of its iterations on well-conditioned problems."""
    rng = np.random.default_rng(5)
    iters, iters_ipm = [], []
    for trial in range(40):
        if trial < 20:  # the speed suite's kind of problem
            k = int(rng.integers(3, 41))
            jac = torch.tensor(rng.standard_normal((k, 64)) * 10.0 ** rng.uniform(-1, 1, (k, 1)))
            gram, c = jac @ jac.T, C
        else:
            gram_np, c = _random_gram(rng)
            gram = torch.tensor(gram_np)
        ours = solve_cagrad_dual(gram, c)
        theirs = _ipm_only(monkeypatch, gram, c)
        assert ours.info.converged and theirs.info.converged
        assert ours.info.backward_error <= 100 * 1e-12 or ours.at_zero
        a = gram.double()
        diff = ours.coefficients - theirs.coefficients
        norm = float((theirs.coefficients @ a @ theirs.coefficients).sqrt())
        assert float((diff @ a @ diff).clamp_min(0).sqrt()) <= 1e-6 * norm + 1e-12
        if trial < 20:
            iters.append(ours.info.iterations)
            iters_ipm.append(theirs.info.iterations)
    assert statistics.median(iters) <= 2 and max(iters) <= 6, iters
    assert min(iters_ipm) >= 6, iters_ipm


def test_support_solve_is_stationary_on_its_face() -> None:
    """On the optimum's support the closed form is the optimum: zero off the support, on the
    simplex, zero multipliers on the support, and ``b + t Q w`` is F's gradient."""
    import fairmtl.solvers.cagrad as module

    rng = np.random.default_rng(8)
    for _ in range(10):
        k = int(rng.integers(3, 30))
        jac = torch.tensor(rng.standard_normal((k, 40)) * 10.0 ** rng.uniform(-1, 1, (k, 1)))
        gram = jac @ jac.T
        q = gram / (gram.diagonal().sum() / k)
        qbar = q.sum(dim=1) / k
        b = qbar / (qbar.sum() / k).sqrt()
        best = solve_cagrad_dual(q, C)  # q's own normalisation is the identity
        keep = best.weights > 1e-9 * best.weights.max()
        found = module._support_solve(q, b, C, keep.nonzero().squeeze(1))
        assert found is not None
        w, multiplier = found
        assert torch.all(w[~keep] == 0) and abs(float(w.sum()) - 1.0) <= 1e-13
        assert float(multiplier[keep].abs().max()) <= 1e-10
        assert float(multiplier.min()) >= -1e-10  # optimal: no task wants in
        ny = torch.sqrt(w @ q @ w)
        grad = b + (C / ny) * (q @ w)
        shift = grad - multiplier
        torch.testing.assert_close(shift, torch.full_like(shift, float(shift[0])))
        torch.testing.assert_close(w, best.weights, rtol=0, atol=1e-9)


def test_support_solve_rejects_singular_faces_and_faces_without_a_stationary_point() -> None:
    import fairmtl.solvers.cagrad as module

    g = torch.tensor([[1.0, 0.0], [2.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    q = g @ g.T  # tasks 0 and 1 parallel: Q on {0, 1} is singular
    b = q.sum(dim=1) / 3

    def solve(c: float, keep: list[bool]):
        mask = torch.tensor(keep)
        return module._support_solve(q, b, c, mask.nonzero().squeeze(1))

    assert solve(C, [True, True, False]) is None
    # On {0, 2} (orthogonal unit gradients) a stationary point needs 2 c^2 > 4/9 here.
    assert solve(C, [True, False, True]) is None
    assert solve(0.7, [True, False, True]) is not None


def test_results_can_enter_autograd_graphs() -> None:
    """The solver runs in inference mode; what it returns is an ordinary tensor."""
    jac = torch.randn(5, 9, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    sol = solve_cagrad_dual(jac @ jac.T, C)
    x = torch.ones(5, dtype=torch.float64, requires_grad=True)
    (sol.coefficients * x).sum().backward()
    assert not sol.weights.is_inference() and x.grad is not None


def test_accelerator_path_matches_the_cpu_path() -> None:
    """``check_every=4`` (the default off the CPU: device-side scalars, an LU whose error
    code is not read, a test every 4 iterations, no crossover) gives the CPU path's
    direction, as certified, on well-conditioned and adversarial random problems
    (rank-deficient, ill-conditioned, scales over 16 decades, optima at g_w = 0)."""
    rng = np.random.default_rng(11)
    for trial in range(60):
        gram_np, c = _random_gram(rng)
        gram = torch.tensor(gram_np)
        cpu = solve_cagrad_dual(gram, c)
        acc = solve_cagrad_dual(gram, c, check_every=4)
        assert acc.info.converged == cpu.info.converged, (trial, cpu.info, acc.info)
        assert acc.at_zero == cpu.at_zero, trial
        diff = acc.coefficients - cpu.coefficients
        norm = float((cpu.coefficients @ gram @ cpu.coefficients).clamp_min(0).sqrt())
        scale = float(gram.diagonal().max().sqrt())  # ||d|| may vanish (g_w = 0, c >= 1)
        assert float((diff @ gram @ diff).clamp_min(0).sqrt()) <= 1e-6 * max(norm, scale * 1e-8)
        if not cpu.at_zero:
            assert acc.info.backward_error <= 100 * 1e-12, (trial, acc.info)


def test_accelerator_path_interior_point_stops_moving_once_certified(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Iterations between two tests leave an iterate that met the test where it is: with
    a test every 2 or every 8 iterations the interior point
    returns the same weights, and counts only the iterations that moved."""
    import fairmtl.solvers.cagrad as module

    seen: dict[int, tuple[torch.Tensor, int, bool]] = {}
    original = module._dual_ipm_sync_free

    def spy(*args: object) -> tuple[torch.Tensor, int, bool]:
        out = original(*args)  # type: ignore[arg-type]
        seen[int(args[-1])] = out  # type: ignore[call-overload]
        return out

    monkeypatch.setattr(module, "_dual_ipm_sync_free", spy)
    rng = np.random.default_rng(3)
    for _ in range(10):
        k = int(rng.integers(3, 41))
        jac = torch.tensor(rng.standard_normal((k, 64)) * 10.0 ** rng.uniform(-1, 1, (k, 1)))
        seen.clear()
        for every in (2, 8):
            solve_cagrad_dual(jac @ jac.T, C, check_every=every)
        (w2, it2, ok2), (w8, it8, ok8) = seen[2], seen[8]
        assert ok2 and ok8 and it2 == it8
        assert torch.allclose(w2, w8, rtol=0.0, atol=1e-15)


def test_check_every_must_be_a_positive_int() -> None:
    gram = torch.eye(3, dtype=torch.float64)
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="check_every"):
            solve_cagrad_dual(gram, C, check_every=bad)  # type: ignore[arg-type]
