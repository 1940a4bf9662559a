"""Properties every registered aggregator must have, on adversarial Jacobians.

The suite discovers the aggregators through the registry, so a new method is covered
the moment it registers itself; no method is named here. Per-method guarantees (MGDA's
non-conflict, IMTL-G's equal projections, ...) live in each method's own test file and
reuse the cases of ``adversarial.py``.
"""

from __future__ import annotations

import copy
import inspect

import pytest
import torch
from adversarial import adversarial_cases, losses_for, relative_error

import fairmtl
from fairmtl.aggregators import Aggregator, GramianWeighting

AGGREGATORS = sorted(n for n in fairmtl.available() if isinstance(fairmtl.make(n), Aggregator))
CASES = adversarial_cases()
CASE_IDS = [name for name, _ in CASES]


def _make(name: str) -> Aggregator:
    """A fresh instance; random methods get a fixed seed so two instances agree."""
    cls = type(fairmtl.make(name))
    seeded = "seed" in inspect.signature(cls).parameters
    return fairmtl.make(name, seed=0) if seeded else fairmtl.make(name)


def test_the_registry_holds_aggregators() -> None:
    assert len(AGGREGATORS) >= 5


@pytest.mark.parametrize("name", AGGREGATORS)
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_direction_is_finite_with_the_jacobians_shape_and_dtype(name, case) -> None:
    _, jac = case
    agg = _make(name)
    with torch.no_grad():
        out = agg(jac, losses_for(jac))
    assert out.shape == (jac.shape[1],)
    assert out.dtype == jac.dtype
    assert torch.isfinite(out).all(), f"{name} returned a non-finite direction"


def _permutation(k: int) -> torch.Tensor:
    return (
        torch.randperm(k, generator=torch.Generator().manual_seed(k))
        if k > 1
        else torch.zeros(1, dtype=torch.long)
    )


@pytest.mark.parametrize("name", [n for n in AGGREGATORS if fairmtl.make(n).deterministic])
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_permuting_the_tasks_leaves_the_direction_unchanged(name, case) -> None:
    _, jac = case
    losses = losses_for(jac)
    perm = _permutation(jac.shape[0])
    agg = _make(name)
    ref = agg(jac, losses)
    out = _make(name)(jac[perm], losses[perm])
    # Rounding in d = sum_i w_i g_i is bounded by eps * sum_i |w_i| ||g_i||, which exceeds
    # ||d|| near Pareto-stationary points (opposite rows): measure against that bound.
    scale = max(float(ref.double().norm()), float(out.double().norm()))
    if isinstance(agg, GramianWeighting):
        w = agg.weights(jac.double() @ jac.double().T)
        scale = max(scale, float((w.abs() * jac.double().norm(dim=1)).sum()))
    tol = 1e-4 if jac.dtype == torch.float32 else 1e-8
    assert float((out.double() - ref.double()).norm()) <= tol * scale


@pytest.mark.parametrize(
    "name", [n for n in AGGREGATORS if isinstance(fairmtl.make(n), GramianWeighting)]
)
def test_gramian_weightings_return_the_jacobian_transpose_times_their_weights(name) -> None:
    jac = torch.randn(4, 30, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    losses = losses_for(jac)
    w = _make(name).weights(jac @ jac.T)
    assert w.shape == (4,) and w.dtype == torch.float64
    out = _make(name)(jac, losses)
    assert relative_error(out, jac.T @ w) <= 1e-9


@pytest.mark.parametrize("name", AGGREGATORS)
def test_state_dict_resumes_the_exact_sequence_of_directions(name) -> None:
    gen = torch.Generator().manual_seed(3)
    jacs = [torch.randn(3, 20, dtype=torch.float64, generator=gen) for _ in range(6)]
    losses = [0.5 + torch.rand(3, dtype=torch.float64, generator=gen) for _ in range(6)]
    agg = _make(name)
    for j, l in zip(jacs[:3], losses[:3]):
        agg(j, l)
    state = copy.deepcopy(agg.state_dict())
    expected = [agg(j, l) for j, l in zip(jacs[3:], losses[3:])]
    fresh = _make(name)
    fresh.load_state_dict(state)
    got = [fresh(j, l) for j, l in zip(jacs[3:], losses[3:])]
    for e, g in zip(expected, got):
        assert torch.equal(e, g)


@pytest.mark.parametrize("name", AGGREGATORS)
def test_bad_jacobians_are_clear_errors(name) -> None:
    agg = _make(name)
    with pytest.raises(ValueError, match="shape"):
        agg(torch.randn(3))
    bad = torch.randn(3, 4)
    bad[2, 1] = float("nan")
    with pytest.raises(ValueError, match="task 2"):
        agg(bad, torch.ones(3))
    # Infinite entries too, also when they cancel in the row's sum (inf - inf), and the
    # rejected Jacobian leaves the method's state as it was.
    agg(torch.randn(3, 4), torch.ones(3))
    before = copy.deepcopy(agg.state_dict())
    for row, entries in ((1, [float("inf")]), (0, [float("inf"), float("-inf")])):
        bad = torch.randn(3, 4)
        bad[row, : len(entries)] = torch.tensor(entries)
        with pytest.raises(ValueError, match=f"task {row}"):
            agg(bad, torch.ones(3))
    assert repr(agg.state_dict()) == repr(before)
