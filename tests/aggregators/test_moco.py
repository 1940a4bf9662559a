"""MoCo: a hand-checked run, the simplex projection, state, losses, and the Balancer."""

from __future__ import annotations

import copy
import itertools
import math

import pytest
import torch
from torch import nn

import fairmtl
from fairmtl.aggregators.moco import MoCo, project_onto_simplex


def _project_pair(v1: float, v2: float) -> tuple[float, float]:
    """Projection onto the 2-simplex (a segment): w1 = clip((v1 - v2 + 1) / 2, 0, 1)."""
    w1 = min(max((v1 - v2 + 1.0) / 2.0, 0.0), 1.0)
    return w1, 1.0 - w1


def _moco_reference(
    grads: list[list[list[float]]],
    losses: list[list[float]],
    beta: float,
    sigma_beta: float,
    gamma: float,
    sigma_gamma: float,
    rho: float,
) -> list[tuple[list[float], list[float]]]:
    """MoCo's formulas for K = 2 in plain Python floats: (lambda, d) after each step."""
    y = [[0.0] * len(grads[0][0]) for _ in range(2)]
    lam = [0.5, 0.5]
    out = []
    for t, (g, l) in enumerate(zip(grads, losses), start=1):
        b, c = beta / t**sigma_beta, gamma / t**sigma_gamma
        for i in range(2):
            norm = math.sqrt(sum(x * x for x in g[i]))
            g_hat = [x / norm * l[i] for x in g[i]]
            y[i] = [yi - b * (yi - gi) for yi, gi in zip(y[i], g_hat)]
        a = [[sum(p * q for p, q in zip(y[i], y[j])) for j in range(2)] for i in range(2)]
        step = [sum(a[i][j] * lam[j] for j in range(2)) + rho * lam[i] for i in range(2)]
        lam = list(_project_pair(lam[0] - c * step[0], lam[1] - c * step[1]))
        d = [lam[0] * p + lam[1] * q for p, q in zip(y[0], y[1])]
        out.append((lam, d))
    return out


GRADS = [
    [[3.0, 0.0, 4.0], [0.0, -1.0, 0.0]],
    [[1.0, 2.0, -2.0], [-2.0, 0.0, 0.0]],
]
LOSSES = [[2.0, 1.0], [1.5, 0.5]]


def test_two_steps_match_the_formulas_by_hand() -> None:
    agg = MoCo()
    # Step 1 by hand: g_hat = (1.2, 0, 1.6), (0, -1, 0); y = g_hat / 2 (y_0 = 0, beta_1 = 0.5);
    # Y^T Y = diag(1, 0.25); lambda_0 - 0.1 (Y^T Y) lambda_0 = (0.45, 0.4875), projected by
    # adding (1 - 0.9375) / 2 to both: (0.48125, 0.51875).
    d1 = agg(
        torch.tensor(GRADS[0], dtype=torch.float64), torch.tensor(LOSSES[0], dtype=torch.float64)
    )
    assert agg.last_weights is not None
    torch.testing.assert_close(
        agg.last_weights, torch.tensor([0.48125, 0.51875], dtype=torch.float64)
    )
    torch.testing.assert_close(
        d1, torch.tensor([0.48125 * 0.6, -0.51875 * 0.5, 0.48125 * 0.8], dtype=torch.float64)
    )
    d2 = agg(
        torch.tensor(GRADS[1], dtype=torch.float64), torch.tensor(LOSSES[1], dtype=torch.float64)
    )
    ref = _moco_reference(GRADS, LOSSES, 0.5, 0.5, 0.1, 0.5, 0.0)
    torch.testing.assert_close(agg.last_weights, torch.tensor(ref[1][0], dtype=torch.float64))
    torch.testing.assert_close(d2, torch.tensor(ref[1][1], dtype=torch.float64))
    assert agg.step == 2


def test_large_step_clips_the_weights_to_a_vertex() -> None:
    # gamma = 20 pushes lambda off the segment: the projection must clip, as by hand.
    kwargs: dict[str, float] = {
        "beta": 0.9,
        "sigma_beta": 0.0,
        "gamma": 20.0,
        "sigma_gamma": 1.0,
        "rho": 0.3,
    }
    agg = MoCo(**kwargs)  # type: ignore[arg-type]
    outs = [
        agg(torch.tensor(g, dtype=torch.float64), torch.tensor(l, dtype=torch.float64))
        for g, l in zip(GRADS, LOSSES)
    ]
    ref = _moco_reference(GRADS, LOSSES, **kwargs)
    assert ref[0][0] in ([1.0, 0.0], [0.0, 1.0])  # the hand example really clips
    for out, (_, d) in zip(outs, ref):
        torch.testing.assert_close(out, torch.tensor(d, dtype=torch.float64))


def _brute_force_projection(v: list[float]) -> list[float]:
    """Try every support S: w_S = v_S - (sum v_S - 1) / |S|; keep the nearest feasible."""
    best: list[float] | None = None
    best_dist = math.inf
    for size in range(1, len(v) + 1):
        for support in itertools.combinations(range(len(v)), size):
            shift = (sum(v[i] for i in support) - 1.0) / size
            w = [v[i] - shift if i in support else 0.0 for i in range(len(v))]
            if min(w) < -1e-15:
                continue
            dist = sum((a - b) ** 2 for a, b in zip(w, v))
            if dist < best_dist:
                best, best_dist = w, dist
    assert best is not None
    return best


@pytest.mark.parametrize("k", [1, 2, 3, 5, 7])
def test_projection_matches_brute_force(k: int) -> None:
    gen = torch.Generator().manual_seed(k)
    for scale in (0.1, 1.0, 10.0, 1e4):
        v = torch.randn(k, dtype=torch.float64, generator=gen) * scale
        got = project_onto_simplex(v)
        torch.testing.assert_close(
            got, torch.tensor(_brute_force_projection(v.tolist()), dtype=torch.float64)
        )
        assert float(got.min()) >= 0 and abs(float(got.sum()) - 1) < 1e-12
    ties = torch.tensor([0.3] * k, dtype=torch.float64)
    torch.testing.assert_close(
        project_onto_simplex(ties), torch.full((k,), 1.0 / k, dtype=torch.float64)
    )
    inside = torch.softmax(torch.randn(k, dtype=torch.float64, generator=gen), 0)
    torch.testing.assert_close(project_onto_simplex(inside), inside)


def test_projection_matches_scipy() -> None:
    optimize = pytest.importorskip("scipy.optimize")
    v = torch.tensor([0.9, -0.4, 0.7, 0.05, 2.0], dtype=torch.float64)
    res = optimize.minimize(
        lambda w: float(((w - v.numpy()) ** 2).sum()),
        x0=[0.2] * 5,
        bounds=[(0, 1)] * 5,
        constraints=[{"type": "eq", "fun": lambda w: w.sum() - 1}],
        method="SLSQP",
        options={"ftol": 1e-14},
    )
    assert res.success
    torch.testing.assert_close(
        project_onto_simplex(v), torch.tensor(res.x, dtype=torch.float64), rtol=0, atol=1e-7
    )


def test_zero_gradient_gives_zero_tracking_and_no_nan() -> None:
    jac = torch.tensor([[0.0, 0.0, 0.0], [1.0, 2.0, 2.0]], dtype=torch.float64)
    agg = MoCo()
    d = agg(jac, torch.tensor([1.0, 3.0], dtype=torch.float64))
    assert torch.isfinite(d).all()
    y = agg.state_dict()["y"]
    assert torch.equal(y[0], torch.zeros(3, dtype=torch.float64))
    torch.testing.assert_close(y[1], 0.5 * 3.0 * jac[1] / 3.0)


def test_direction_is_invariant_to_rescaling_the_gradients() -> None:
    gen = torch.Generator().manual_seed(5)
    jac = torch.randn(3, 7, dtype=torch.float64, generator=gen)
    losses = torch.tensor([0.5, 1.0, 2.0], dtype=torch.float64)
    a, b = MoCo(), MoCo()
    for _ in range(3):
        torch.testing.assert_close(
            a(jac, losses),
            b(jac * torch.tensor([[1e6], [1e-6], [3.0]], dtype=torch.float64), losses),
        )


@pytest.mark.parametrize("scale", [1e200, 1e-200])
def test_rows_whose_squares_over_or_underflow_are_normalised_exactly(scale: float) -> None:
    """A row at 1e200 (its squared norm overflows) or 1e-200 (underflows) takes the scaled
    normalisation, next to ordinary rows that take the fused update: the same direction and
    tracked gradients as for the unscaled rows."""
    gen = torch.Generator().manual_seed(6)
    jac = torch.randn(3, 9, dtype=torch.float64, generator=gen)
    losses = torch.tensor([0.5, 1.0, 2.0], dtype=torch.float64)
    extreme = jac * torch.tensor([[scale], [1.0], [1.0]], dtype=torch.float64)
    a, b = MoCo(), MoCo()
    for _ in range(3):
        torch.testing.assert_close(b(extreme, losses), a(jac, losses), rtol=1e-13, atol=0)
    torch.testing.assert_close(b.state_dict()["y"], a.state_dict()["y"], rtol=1e-13, atol=0)


def test_the_tracked_gradients_are_updated_in_place_without_touching_saved_states() -> None:
    gen = torch.Generator().manual_seed(7)
    jac = torch.randn(4, 11, dtype=torch.float64, generator=gen)
    losses = torch.tensor([0.5, 1.0, 2.0, 4.0], dtype=torch.float64)
    agg = MoCo()
    agg(jac, losses)
    saved = agg.state_dict()
    y = agg._y
    agg(2.0 * jac, losses)
    assert agg._y is y  # the same storage: no (K, m) copy per step
    expected = (1 - 0.5 / 2**0.5) * saved["y"] + 0.5 / 2**0.5 * (
        losses[:, None] * jac / jac.norm(dim=1, keepdim=True)
    )
    torch.testing.assert_close(agg.state_dict()["y"], expected, rtol=1e-13, atol=0)
    assert not torch.equal(saved["y"], agg.state_dict()["y"])  # the saved state is a copy


def test_first_init_starts_from_the_normalised_gradients() -> None:
    jac = torch.tensor([[3.0, 0.0, 4.0], [0.0, -1.0, 0.0]], dtype=torch.float64)
    agg = MoCo(y_init="first")
    agg(jac, torch.tensor([2.0, 1.0], dtype=torch.float64))
    torch.testing.assert_close(
        agg.state_dict()["y"],
        torch.tensor([[1.2, 0.0, 1.6], [0.0, -1.0, 0.0]], dtype=torch.float64),
    )


def test_state_dict_round_trip_mid_run() -> None:
    gen = torch.Generator().manual_seed(11)
    jacs = [torch.randn(4, 9, dtype=torch.float64, generator=gen) for _ in range(5)]
    losses = [0.2 + torch.rand(4, dtype=torch.float64, generator=gen) for _ in range(5)]
    agg = MoCo(rho=0.1)
    for j, l in zip(jacs[:2], losses[:2]):
        agg(j, l)
    state = copy.deepcopy(agg.state_dict())
    assert state["step"] == 2
    expected = [agg(j, l) for j, l in zip(jacs[2:], losses[2:])]
    fresh = MoCo(rho=0.1)
    fresh.load_state_dict(state)
    for e, (j, l) in zip(expected, zip(jacs[2:], losses[2:])):
        assert torch.equal(fresh(j, l), e)
    # A fresh instance without the state gives a different sequence (the state matters).
    assert not torch.equal(MoCo(rho=0.1)(jacs[2], losses[2]), expected[0])
    with pytest.raises(KeyError, match="lambda"):
        MoCo().load_state_dict({"step": 1, "y": None})


def test_losses_are_required() -> None:
    agg = MoCo()
    assert agg.requires_losses
    with pytest.raises(ValueError, match="losses"):
        agg(torch.randn(2, 3))
    with pytest.raises(ValueError, match="losses"):
        agg(torch.randn(2, 3), torch.ones(3))


def test_another_shape_mid_run_is_a_clear_error() -> None:
    agg = MoCo()
    agg(torch.randn(2, 3), torch.ones(2))
    with pytest.raises(ValueError, match="fresh instance"):
        agg(torch.randn(3, 3), torch.ones(3))


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"beta": 0.0}, "beta"),
        ({"beta": 1.5}, "beta"),
        ({"sigma_beta": -0.1}, "sigma_beta"),
        ({"gamma": 0.0}, "gamma"),
        ({"gamma": float("inf")}, "gamma"),
        ({"sigma_gamma": float("nan")}, "sigma_gamma"),
        ({"rho": -1.0}, "rho"),
        ({"y_init": "ones"}, "y_init"),
        ({"gamma": "0.1"}, "gamma"),
    ],
)
def test_arguments_are_validated_with_their_names(kwargs: dict[str, object], name: str) -> None:
    with pytest.raises((ValueError, TypeError), match=name):
        MoCo(**kwargs)  # type: ignore[arg-type]


def test_registered_with_a_readable_repr() -> None:
    agg = fairmtl.make("moco", gamma=0.2)
    assert isinstance(agg, MoCo)
    assert repr(agg) == "MoCo(beta=0.5, sigma_beta=0.5, gamma=0.2, sigma_gamma=0.5, rho=0.0)"


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(4, 6), nn.Tanh())
        self.heads = nn.ModuleList(nn.Linear(6, 1) for _ in range(2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.encoder(x)
        return torch.cat([h(z) for h in self.heads], dim=1)


def test_through_the_balancer_the_losses_reach_moco() -> None:
    torch.manual_seed(0)
    model = _Net().double()
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(16, 4, dtype=torch.float64, generator=gen)
    target = torch.randn(16, 2, dtype=torch.float64, generator=gen)
    balancer = fairmtl.Balancer(aggregator="moco")
    reference = MoCo()
    shared = list(model.encoder.parameters())
    for _ in range(2):
        model.zero_grad()
        losses = ((model(x) - target) ** 2).mean(dim=0)
        jac = torch.stack(
            [
                torch.cat(
                    [
                        g.reshape(-1)
                        for g in torch.autograd.grad(losses[i], shared, retain_graph=True)
                    ]
                )
                for i in range(2)
            ]
        )
        expected = reference(jac, losses.detach())
        balancer.backward(losses, shared=shared, task_params=model.heads.parameters())
        steps = [p.grad for p in shared]
        assert all(s is not None for s in steps)
        got = torch.cat([s.reshape(-1) for s in steps if s is not None])
        torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)
        with torch.no_grad():
            for p, s in zip(shared, steps):
                if s is not None:
                    p.sub_(0.1 * s)
    assert isinstance(balancer.aggregator, MoCo) and balancer.aggregator.step == 2
