"""MGDA: min-norm point of the convex hull, its guarantee, and agreement with SLSQP."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from adversarial import adversarial_cases

import fairmtl
from fairmtl.solvers import min_norm_simplex


def test_two_tasks_closed_form() -> None:
    g = torch.tensor([[1.0, 0.0], [0.0, 2.0]], dtype=torch.float64)
    # min ||u g1 + (1-u) g2||^2 = u^2 + 4 (1-u)^2 -> u = 4/5
    torch.testing.assert_close(
        fairmtl.MGDA().weights(g @ g.T), torch.tensor([0.8, 0.2], dtype=torch.float64)
    )


@pytest.mark.parametrize("k", [2, 3, 10, 40])
def test_no_task_is_hurt_and_matches_slsqp(k: int) -> None:
    optimize = pytest.importorskip("scipy.optimize")
    gen = torch.Generator().manual_seed(k)
    g = (
        torch.randn(k, 3 * k, dtype=torch.float64, generator=gen)
        * torch.logspace(-2, 2, k, dtype=torch.float64)[:, None]
    )
    d = fairmtl.MGDA()(g)
    # Guarantee (Desideri 2012): g_i . d >= ||d||^2 for every task.
    assert (g @ d >= d @ d * (1 - 1e-9) - 1e-12).all()
    a = (g @ g.T).numpy()
    res = optimize.minimize(
        lambda u: u @ a @ u,
        np.ones(k) / k,
        jac=lambda u: 2 * a @ u,
        method="SLSQP",
        bounds=[(0, 1)] * k,
        constraints=[{"type": "eq", "fun": lambda u: u.sum() - 1}],
        options={"ftol": 1e-15, "maxiter": 1000},
    )
    assert float(d @ d) <= res.fun * (1 + 1e-7) + 1e-15


def test_rank_deficient_many_tasks_and_pareto_stationary() -> None:
    g = torch.randn(64, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))  # K > m
    sol = min_norm_simplex(g @ g.T)
    assert sol.info.converged and torch.isfinite(sol.weights).all()
    assert abs(float(sol.weights.sum()) - 1) < 1e-12 and (sol.weights >= 0).all()
    # Random directions in R^3 surround the origin: it is Pareto stationary, d ~ 0.
    assert float((sol.weights @ g).norm()) < 1e-6


def test_single_task_and_zero_gradients() -> None:
    g = torch.tensor([[3.0, 4.0]])
    torch.testing.assert_close(fairmtl.MGDA()(g), g[0])
    zero = torch.zeros(3, 5)
    with pytest.warns(fairmtl.RegularizationWarning, match="zero"):
        assert torch.equal(fairmtl.MGDA()(zero), torch.zeros(5))


def test_reference_normalizations_solve_on_scaled_gradients_and_apply_to_raw_ones() -> None:
    g = torch.randn(3, 10, dtype=torch.float64, generator=torch.Generator().manual_seed(9))
    losses = torch.tensor([0.5, 2.0, 4.0], dtype=torch.float64)
    norms = g.norm(dim=1)
    for kind, divisor in [("l2", norms), ("loss", losses), ("loss+", losses * norms)]:
        scaled = g / divisor[:, None]
        w = fairmtl.MGDA().weights(scaled @ scaled.T)
        got = fairmtl.MGDA(normalization=kind)(g, losses)
        torch.testing.assert_close(got, g.T @ w, rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match="losses"):
        fairmtl.MGDA(normalization="loss")(g)
    with pytest.raises(ValueError, match="normalization"):
        fairmtl.MGDA(normalization="L2")  # type: ignore[arg-type]
    assert repr(fairmtl.MGDA(normalization="l2")) == "MGDA(normalization='l2')"


def test_agrees_with_torchjd_run_to_convergence() -> None:
    aggregation = pytest.importorskip("torchjd.aggregation")
    for seed in range(6):
        jac = torch.randn(
            2 + seed, 20, dtype=torch.float64, generator=torch.Generator().manual_seed(seed)
        )
        ours = fairmtl.MGDA()(jac)
        # TorchJD's defaults (Frank-Wolfe, epsilon 1e-3, 100 iterations) stop early:
        # their direction is longer than the min-norm point; run to convergence they agree.
        theirs = aggregation.MGDA(epsilon=1e-14, max_iters=200_000)(jac)
        assert float((ours - theirs).norm()) <= 1e-6 * float(ours.norm())
        assert float(ours.norm()) <= float(aggregation.MGDA()(jac).norm()) * (1 + 1e-12)


@pytest.mark.parametrize("case", adversarial_cases(), ids=lambda c: c[0])
def test_no_task_is_hurt_on_adversarial_jacobians(case) -> None:
    _, jac = case
    d = fairmtl.MGDA()(jac).double()
    j64 = jac.double()
    # g_i . d >= ||d||^2, up to the rounding of d = G^T w (eps * ||g_i|| * max ||g_j||).
    eps = 1e-6 if jac.dtype == torch.float32 else 1e-13
    slack = eps * j64.norm(dim=1) * j64.norm(dim=1).max()
    assert bool(((j64 @ d) >= (d @ d) - slack).all())


def test_active_set_crossover_matches_the_interior_point_alone() -> None:
    """On the CPU (a test every iteration) the support of an early iterate, solved exactly,
    ends the solve; it gives the interior point's min-norm point (``check_every=4``: no
    crossover), to its tolerance, in a fraction of the iterations."""
    rng = np.random.default_rng(3)
    iters, iters_ipm = [], []
    for trial in range(30):
        k = int(rng.integers(3, 41))
        dim = (
            int(rng.integers(k // 2 + 1, 3 * k)) if trial % 3 == 2 else 4 * k
        )  # some rank-deficient
        g = torch.tensor(rng.standard_normal((k, dim)) * 10.0 ** rng.uniform(-1, 1, (k, 1)))
        gram = g @ g.T
        ours = min_norm_simplex(gram)
        theirs = min_norm_simplex(gram, check_every=4)
        assert ours.info.converged and theirs.info.converged
        d, d_ipm = ours.weights @ g, theirs.weights @ g
        assert float((d - d_ipm).norm()) <= 1e-6 * float(d_ipm.norm()) + 1e-12
        assert float(ours.value) <= float(theirs.value) * (1 + 1e-10) + 1e-15
        assert ours.info.backward_error <= 1e-9
        if trial % 3 != 2:
            iters.append(ours.info.iterations)
            iters_ipm.append(theirs.info.iterations)
    assert max(iters) <= 4 and min(iters_ipm) >= 8, (iters, iters_ipm)


def test_results_can_enter_autograd_graphs() -> None:
    """The solver runs in inference mode; what it returns is an ordinary tensor."""
    g = torch.randn(4, 7, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    sol = min_norm_simplex(g @ g.T)
    x = torch.ones(4, dtype=torch.float64, requires_grad=True)
    (sol.weights * x).sum().backward()
    assert not sol.weights.is_inference() and x.grad is not None
