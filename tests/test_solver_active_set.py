"""The active-set crossover helper on a problem with a known answer: the Euclidean
projection onto the simplex (sort-based formula of Held, Wolfe & Crowder 1974)."""

from __future__ import annotations

import numpy as np
import torch

from fairmtl.solvers._active_set import SupportTrials, active_set, cholesky_solve_on


def _projection(y: torch.Tensor) -> torch.Tensor:
    """argmin_{w in simplex} ||w - y||^2 by sorting."""
    s, _ = torch.sort(y, descending=True)
    cums = torch.cumsum(s, 0) - 1.0
    ks = torch.arange(1, y.numel() + 1, dtype=y.dtype)
    rho = int((s - cums / ks > 0).nonzero().max())
    return (y - cums[rho] / (rho + 1)).clamp_min(0.0)


def _face(y: torch.Tensor):
    """On a support S: w_S = y_S + lam, lam = (1 - sum y_S) / |S|; multipliers w - y - lam."""

    def face(index: torch.Tensor):
        lam = (1.0 - float(y[index].sum())) / index.numel()
        w = torch.zeros_like(y).index_copy_(0, index, y[index] + lam)
        return w, w - y - lam

    return face


def test_active_set_finds_the_projection_from_a_rough_support() -> None:
    rng = np.random.default_rng(0)
    found = 0
    for _ in range(50):
        y = torch.tensor(rng.standard_normal(12))
        exact = _projection(y)
        guess = y > float(y.median())  # a rough support
        out = active_set(_face(y), guess, 1e-12, rounds=12)
        if out is None:
            continue
        found += 1
        w, multiplier = out
        torch.testing.assert_close(w, exact, rtol=0, atol=1e-12)
        assert float(multiplier.min()) >= -1e-12
        assert float(multiplier[w > 0].abs().max()) <= 1e-12
    assert found >= 45


def test_active_set_gives_up_on_an_empty_support_or_after_its_rounds() -> None:
    y = torch.tensor([3.0, 2.0, -1.0, 0.5], dtype=torch.float64)
    assert active_set(_face(y), torch.zeros(4, dtype=torch.bool), 1e-12, rounds=5) is None
    # From {2} alone every other task wants in: one round cannot finish.
    start = torch.tensor([False, False, True, False])
    assert active_set(_face(y), start, 1e-12, rounds=1) is None
    assert active_set(_face(y), start, 1e-12, rounds=5) is not None


def test_cholesky_solve_on_a_principal_submatrix() -> None:
    g = torch.randn(5, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    m = g @ g.T
    index = torch.tensor([0, 2, 3])
    rhs = torch.randn(3, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    x = cholesky_solve_on(m, index, rhs)
    assert x is not None
    torch.testing.assert_close(m[index][:, index] @ x, rhs)
    singular = torch.ones(3, 3, dtype=torch.float64)
    assert cholesky_solve_on(singular, torch.arange(3), rhs[:, :1].expand(3, 1)) is None


def test_support_trials_skip_a_repeated_support_and_stop_at_the_limit() -> None:
    a, b = torch.tensor([True, False]), torch.tensor([False, True])
    trials = SupportTrials(3)
    assert trials.new(a) and not trials.new(a.clone())  # nothing changed: not again
    assert trials.new(b) and trials.new(a)
    assert not trials.new(b)  # the limit of 3 is spent
    assert not SupportTrials(0).new(a)
