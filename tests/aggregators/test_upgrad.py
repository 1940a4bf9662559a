"""UPGrad: the dual-cone projections, their guarantee, the solver's KKT conditions, TorchJD."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from adversarial import adversarial_cases, relative_error
from torch import Tensor

import fairmtl
from fairmtl.aggregators.upgrad import UPGrad
from fairmtl.solvers.dual_cone import project_dual_cone

CASES = adversarial_cases()
CASE_IDS = [name for name, _ in CASES]


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _rounding_bound(jac: Tensor, w: Tensor) -> Tensor:
    """Per task j, ||g_j|| sum_k |w_k| ||g_k||: the size of the rounding in g_j . (J^T w)."""
    norms = jac.double().norm(dim=1)
    return norms * float((w.double().abs() * norms).sum())


def _random_jacobians() -> list[Tensor]:
    gen = _gen(0)
    out = []
    for k, m in [(3, 10), (5, 5), (8, 3), (10, 40), (16, 16), (40, 100)]:
        row = torch.logspace(-3, 3, k, dtype=torch.float64)[torch.randperm(k, generator=gen)]
        out.append(torch.randn(k, m, dtype=torch.float64, generator=gen) * row[:, None])
    return out


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_no_task_is_hurt_on_adversarial_jacobians(case) -> None:
    # Guarantee (Quinton & Rey 2024): d lies in the dual cone, g_j . d >= 0 for every task,
    # up to the rounding of d = J^T w in the Jacobian's dtype.
    _, jac = case
    agg = UPGrad()
    d = agg(jac)
    w = agg.weights(jac.double() @ jac.double().T)
    tol = 1e-5 if jac.dtype == torch.float32 else 1e-13
    products = jac.double() @ d.double()
    assert (products >= -tol * _rounding_bound(jac, w)).all(), products


@pytest.mark.parametrize("jac", _random_jacobians(), ids=lambda j: f"K{j.shape[0]}-m{j.shape[1]}")
def test_each_projection_satisfies_the_moreau_conditions(jac: Tensor) -> None:
    # p = J^T v is the projection of g_i onto {x : J x >= 0} iff J p >= 0, v - e_i >= 0
    # (g_i - p lies in the polar cone -cone(rows)) and (J p) . (v - e_i) = 0.
    sol = project_dual_cone(jac @ jac.T)
    assert sol.info.converged and sol.info.backward_error < 1e-13
    v = sol.weights
    k = jac.shape[0]
    norms = jac.norm(dim=1)
    for i in range(k):
        p = v[i] @ jac
        jp = jac @ p
        slack = v[i] - torch.eye(k, dtype=v.dtype)[i]
        scale = norms * norms[i]  # |g_j . p| <= ||g_j|| ||g_i||
        assert (slack >= 0).all()
        assert (jp >= -1e-12 * scale * (1 + slack.abs().max())).all()
        comp = (jp * slack).abs() / (scale * (1 + slack.abs()))
        assert float(comp.max()) <= 1e-12


@pytest.mark.parametrize("k", [3, 5, 10])
def test_each_projection_matches_slsqp(k: int) -> None:
    optimize = pytest.importorskip("scipy.optimize")
    gen = _gen(10 + k)
    jac = torch.randn(k, 2 * k, dtype=torch.float64, generator=gen)
    jac = jac * torch.logspace(-1, 1, k, dtype=torch.float64)[:, None]
    a = (jac @ jac.T).numpy()
    v = project_dual_cone(jac @ jac.T).weights.numpy()
    for i in range(k):
        lower = np.eye(k)[i]
        res = optimize.minimize(
            lambda x: x @ a @ x,
            lower + 0.1,
            jac=lambda x: 2 * a @ x,
            method="SLSQP",
            bounds=[(lo, None) for lo in lower],
            options={"ftol": 1e-16, "maxiter": 1000},
        )
        ours = float(v[i] @ a @ v[i])
        assert ours <= res.fun * (1 + 1e-9) + 1e-15  # never worse than SLSQP
        d_ref = torch.from_numpy(res.x) @ jac
        d_ours = torch.from_numpy(v[i]) @ jac
        # SLSQP stops above the optimum (its direction was 1e-4 away here, relative). With
        # f(x) = ||x J||^2 convex and v_i optimal, f(x) - f(v_i) >= ||(x - v_i) J||^2 for any
        # feasible x: SLSQP's value gap bounds its distance to our direction.
        dist2 = float(((d_ref - d_ours) ** 2).sum())
        assert dist2 <= (res.fun - ours) + 1e-12 * res.fun


def _kkt(a: Tensor, v: Tensor, lower: Tensor) -> tuple[float, float, float]:
    """(primal, dual, complementarity) violations of min v^T A v, v >= lower, each made
    relative: slack to 1 + |v|, multipliers A v to sqrt(A_jj) (sum_k sqrt(A_kk) |v_k|)."""
    d = a.diagonal().clamp_min(0).sqrt()
    slack = v - lower
    mult = v @ a  # rows: (A v_p)^T
    size = (v.abs() * d).sum(dim=1, keepdim=True) * d + 1e-300
    primal = float((-slack).clamp_min(0).div(1 + v.abs()).max())
    dual = float((-mult / size).clamp_min(0).max())
    comp = float(torch.minimum(slack.abs() / (1 + v.abs()), mult.abs() / size).max())
    return primal, dual, comp


CASES64 = [(name, jac) for name, jac in CASES if jac.dtype == torch.float64]


@pytest.mark.parametrize("case", CASES64, ids=[name for name, _ in CASES64])
def test_solver_meets_the_kkt_conditions_for_general_lower_bounds(case) -> None:
    _, jac = case
    k = jac.shape[0]
    a = jac @ jac.T
    lower = torch.randn(k + 2, k, dtype=torch.float64, generator=_gen(k))
    lower[0] = 0.0
    sol = project_dual_cone(a, lower)
    v = sol.weights
    assert v.shape == (k + 2, k) and torch.isfinite(v).all()
    assert sol.info.backward_error <= 1e-12, sol.info
    primal, dual, comp = _kkt(a, v, lower)
    assert primal <= 1e-15 and dual <= 1e-12 and comp <= 1e-12, (primal, dual, comp)
    assert torch.equal(v[0], torch.zeros(k, dtype=torch.float64))  # v = 0 solves u = 0


def test_solver_is_invariant_to_per_task_scales() -> None:
    # s = D v with D the gradient norms: problem by problem the scaled solution is unchanged.
    jac = torch.randn(6, 9, dtype=torch.float64, generator=_gen(3))
    ref = project_dual_cone(jac @ jac.T).weights
    scales = torch.logspace(-15, 15, 6, dtype=torch.float64)
    scaled = jac * scales[:, None]
    v = project_dual_cone(scaled @ scaled.T).weights
    # projection of s_i g_i onto the (unchanged) cone: weights v_ij = ref_ij s_i / s_j
    expected = ref * scales[:, None] / scales[None, :]
    assert float(((v - expected).abs() / expected.abs().clamp_min(1e-300)).max()) <= 1e-9


def test_solver_restores_the_thread_setting() -> None:
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        jac = torch.randn(6, 9, dtype=torch.float64, generator=_gen(4))
        project_dual_cone(jac @ jac.T)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(threads)


def test_two_task_closed_form_matches_the_general_solver() -> None:
    gen = _gen(5)
    for _ in range(20):
        jac = torch.randn(2, 4, dtype=torch.float64, generator=gen)
        closed = project_dual_cone(jac @ jac.T).weights
        general = project_dual_cone(jac @ jac.T, torch.eye(2, dtype=torch.float64)).weights
        torch.testing.assert_close(closed, general, rtol=1e-12, atol=1e-14)


def test_two_conflicting_tasks_by_hand() -> None:
    # g1 = (1, 0), g2 = (-1, 1): pi(g1) = g1 - (g1.g2 / |g2|^2) g2 = (1/2, 1/2),
    # pi(g2) = g2 - (g1.g2 / |g1|^2) g1 = (0, 1); d = mean = (1/4, 3/4).
    jac = torch.tensor([[1.0, 0.0], [-1.0, 1.0]], dtype=torch.float64)
    torch.testing.assert_close(UPGrad()(jac), torch.tensor([0.25, 0.75], dtype=torch.float64))


@pytest.mark.parametrize("k", [2, 3, 10, 40])
def test_non_conflicting_gradients_give_their_mean(k: int) -> None:
    jac = torch.rand(k, 3 * k, dtype=torch.float64, generator=_gen(k))  # all g_i . g_j >= 0
    torch.testing.assert_close(UPGrad()(jac), jac.mean(0), rtol=1e-15, atol=0)
    pref = torch.rand(k, dtype=torch.float64, generator=_gen(k + 1))
    torch.testing.assert_close(UPGrad(pref_vector=pref)(jac), pref @ jac, rtol=1e-14, atol=0)


def test_scaling_the_gradients_scales_the_direction() -> None:
    jac = torch.randn(5, 7, dtype=torch.float64, generator=_gen(6))
    ref = UPGrad()(jac)
    for c in (1e-12, 1e-3, 1e4, 1e12):
        assert relative_error(UPGrad()(c * jac), c * ref) <= 1e-12


def test_zero_and_single_task_jacobians() -> None:
    g = torch.tensor([[3.0, -4.0]], dtype=torch.float64)
    torch.testing.assert_close(UPGrad()(g), g[0])
    with pytest.warns(fairmtl.RegularizationWarning, match="zero"):
        assert torch.equal(UPGrad()(torch.zeros(4, 6)), torch.zeros(6))


def test_reg_eps_weakens_the_guarantee_only_at_its_order() -> None:
    g = torch.tensor([[1.0, 0.0], [-1.0, 1e-3]], dtype=torch.float64)  # nearly opposite
    # pref (1, 0): the direction is pi(g_1) alone, which is orthogonal to g_2.
    exact = UPGrad(pref_vector=[1.0, 0.0])(g)
    assert (g @ exact >= -1e-15).all()
    reg = UPGrad(pref_vector=[1.0, 0.0], reg_eps=1e-4)(g)
    assert float((g @ reg).min()) < -1e-5  # the ridge lets the direction conflict a little
    assert float((g @ reg).min()) > -1e-3


def test_constructor_validation_and_repr() -> None:
    assert repr(UPGrad()) == "UPGrad()"
    assert repr(fairmtl.make("upgrad", reg_eps=1e-4, norm_eps=1e-4)) == (
        "UPGrad(reg_eps=0.0001, norm_eps=0.0001)"
    )
    assert repr(UPGrad(pref_vector=[1, 2])) == "UPGrad(pref_vector=[1.0, 2.0])"
    with pytest.raises(ValueError, match="non-negative"):
        UPGrad(pref_vector=[1.0, -1.0])
    with pytest.raises(ValueError, match="1-D"):
        UPGrad(pref_vector=[[1.0]])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="reg_eps"):
        UPGrad(reg_eps=-1.0)
    with pytest.raises(ValueError, match="norm_eps"):
        UPGrad(norm_eps=float("nan"))
    with pytest.raises(ValueError, match="3 entries for 2 tasks"):
        UPGrad(pref_vector=[1.0, 1.0, 1.0])(torch.randn(2, 3))
    with pytest.raises(ValueError, match="lower"):
        project_dual_cone(torch.eye(3), torch.zeros(2, 4))


def _torchjd_jacobians(full_rank: bool) -> list[Tensor]:
    gen = _gen(7)
    out = []
    for k in range(2, 11):
        for _ in range(3):
            m = k + int(torch.randint(0, 2 * k, (1,), generator=gen)) if full_rank else k // 2 + 1
            scale = 10 ** float(torch.empty(1).uniform_(-4, 3, generator=gen))
            out.append(torch.randn(k, m, dtype=torch.float64, generator=gen) * scale)
    return out


def test_matches_torchjd_without_regularisation() -> None:
    """Our default is the paper's exact projection; TorchJD with a quadprog projector without
    normalisation or ridge solves the same QPs (full-rank Gram matrices, as quadprog needs)."""
    aggregation = pytest.importorskip("torchjd.aggregation")
    linalg = pytest.importorskip("torchjd.linalg")
    reference = aggregation.UPGrad(projector=linalg.QuadprogProjector(norm_eps=0.0, reg_eps=0.0))
    for jac in _torchjd_jacobians(full_rank=True):
        assert relative_error(UPGrad()(jac), reference(jac)) <= 1e-9


def test_matches_torchjd_defaults_with_its_regularisation() -> None:
    """TorchJD's UPGrad() solves with A / tr(A) + 1e-4 I and skips the projection when
    tr(A) < 1e-4; UPGrad(reg_eps=1e-4, norm_eps=1e-4) does the same, at any rank."""
    aggregation = pytest.importorskip("torchjd.aggregation")
    reference = aggregation.UPGrad()
    ours = UPGrad(reg_eps=1e-4, norm_eps=1e-4)
    for jac in _torchjd_jacobians(full_rank=True) + _torchjd_jacobians(full_rank=False):
        assert relative_error(ours(jac), reference(jac)) <= 1e-8


def test_accelerator_path_matches_the_cpu_path() -> None:
    """``check_every=4`` (the default off the CPU: convergence tested every 4 iterations,
    LU without reading its error code) gives the CPU path's projections."""
    rng = np.random.default_rng(12)
    for trial in range(12):
        k = int(rng.integers(3, 41))
        dim = k // 2 + 1 if trial % 4 == 3 else 3 * k  # some rank-deficient
        jac = torch.tensor(rng.standard_normal((k, dim)) * 10.0 ** rng.uniform(-2, 2, (k, 1)))
        gram = jac @ jac.T
        cpu = project_dual_cone(gram)
        acc = project_dual_cone(gram, check_every=4)
        assert cpu.info.converged and acc.info.converged
        assert acc.info.backward_error <= 1e-12
        # Row i projects g_i (it may be ~0: K > m random gradients span the space).
        diff = (acc.weights @ jac - cpu.weights @ jac).norm(dim=1)
        assert bool((diff <= 1e-9 * jac.norm(dim=1)).all()), (trial, diff)
