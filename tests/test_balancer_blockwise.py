"""The blockwise Jacobian (``Balancer(max_jacobian_bytes=...)``): the Gram matrix summed over
blocks of parameters and the direction from one more backward pass, never the whole (K, m)
Jacobian. Every Gramian weighting is run through it, found by its class, not its name."""

from __future__ import annotations

import copy
import importlib
from typing import Any

import pytest
import torch
from test_balancer import TwoHeadNet, grads_of, make_batch, task_losses
from torch import Tensor

import fairmtl
from fairmtl._registry import available, lookup
from fairmtl.aggregators.base import Aggregator, GramianWeighting
from fairmtl.jacobian import blockwise_gram, input_blocks, jacobian

K = 3
jacobian_module = importlib.import_module("fairmtl.jacobian")  # fairmtl.jacobian is the function


def _gramian_names() -> list[str]:
    """Registered Gramian weightings the Balancer sends through the Jacobian path."""
    names = []
    for name in available():
        cls = lookup(name)
        if not (isinstance(cls, type) and issubclass(cls, GramianWeighting)):
            continue
        agg = cls()
        if agg.features_only or agg.fixed_weights(K) is not None:
            continue
        names.append(name)
    return names


GRAMIAN = _gramian_names()


def _encoder_bytes(model: TwoHeadNet) -> int:
    return sum(p.numel() * p.element_size() for p in model.encoder.parameters())


def _step(model: TwoHeadNet, balancer: fairmtl.Balancer, scale: float = 1.0) -> dict[str, Tensor]:
    x, y = make_batch(k=K)
    model.zero_grad()
    _z, out = model(x)
    balancer.backward(
        task_losses(out, y) * scale,
        shared=model.encoder.parameters(),
        task_params=model.heads.parameters(),
    )
    return grads_of(model)


def test_the_registry_has_gramian_weightings_to_test() -> None:
    assert len(GRAMIAN) >= 8


@pytest.mark.parametrize("weight_heads", [False, True])
@pytest.mark.parametrize("name", GRAMIAN)
def test_blockwise_gradients_equal_the_full_jacobians(name: str, weight_heads: bool) -> None:
    torch.manual_seed(0)
    model = TwoHeadNet(K).double()
    aggregator = fairmtl.make(name)
    budget = K * _encoder_bytes(model) // 3  # at least three blocks
    full = fairmtl.Balancer(copy.deepcopy(aggregator), weight_heads=weight_heads)
    blockwise = fairmtl.Balancer(
        copy.deepcopy(aggregator), weight_heads=weight_heads, max_jacobian_bytes=budget
    )
    expected = _step(model, full)
    got = _step(model, blockwise)
    assert got.keys() == expected.keys()
    for key in expected:
        torch.testing.assert_close(got[key], expected[key], rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(
        blockwise.aggregator.last_weights, full.aggregator.last_weights, rtol=1e-9, atol=1e-12
    )


def test_no_jacobian_block_larger_than_the_bound_is_ever_formed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    shapes: list[tuple[int, ...]] = []
    original = jacobian_module._block_jacobian

    def recording(*args: Any, **kwargs: Any) -> Tensor:
        out = original(*args, **kwargs)
        shapes.append(tuple(out.shape))
        return out

    monkeypatch.setattr(jacobian_module, "_block_jacobian", recording)
    model = TwoHeadNet(K).double()
    largest = max(p.numel() for p in model.encoder.parameters())
    budget = K * 8 * (largest // 3)  # the largest parameter is split
    _step(model, fairmtl.Balancer("fairgrad", max_jacobian_bytes=budget))
    m = sum(p.numel() for p in model.encoder.parameters())
    assert len(shapes) >= 4
    assert sum(s[1] for s in shapes) == m  # every column once
    assert all(s[0] == K and s[0] * s[1] * 8 <= budget for s in shapes)


def test_a_bound_the_jacobian_fits_in_takes_the_one_block_path(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[int] = []
    original = jacobian_module.blockwise_gram
    monkeypatch.setattr(
        "fairmtl.balancer.blockwise_gram",
        lambda *a, **kw: calls.append(1) or original(*a, **kw),
    )
    model = TwoHeadNet(K).double()
    _step(model, fairmtl.Balancer("fairgrad", max_jacobian_bytes=K * _encoder_bytes(model)))
    assert calls == []
    _step(model, fairmtl.Balancer("fairgrad", max_jacobian_bytes=K * _encoder_bytes(model) - 1))
    assert calls == [1]


def test_input_blocks_cover_every_column_once_in_order() -> None:
    sizes = [5, 1, 7, 2, 2, 30, 2]  # 49 columns
    inputs = [torch.zeros(n, dtype=torch.float32) for n in sizes]
    blocks = input_blocks(inputs, num_tasks=2, max_bytes=2 * 4 * 8 + 7)  # 8 columns a block
    columns = [(seg.index, c) for b in blocks for seg in b for c in range(seg.start, seg.stop)]
    assert columns == [(i, c) for i, n in enumerate(sizes) for c in range(n)]
    assert [sum(seg.stop - seg.start for seg in b) for b in blocks] == [8] * 6 + [1]
    assert input_blocks(inputs, num_tasks=2, max_bytes=1) == [
        [seg] for seg in (s for b in input_blocks(inputs, 2, 8) for s in b)
    ]  # a bound below one column: one column a block


def test_features_mode_splits_the_representation() -> None:
    torch.manual_seed(1)
    model = TwoHeadNet(K).double()
    aggregator = fairmtl.make("fairgrad")
    x, y = make_batch(k=K)
    results = []
    for budget in (None, K * 8 * 7):  # the 32 x 8 representation in blocks of 7 columns
        model.zero_grad()
        z, out = model(x)
        balancer = fairmtl.Balancer(copy.deepcopy(aggregator), max_jacobian_bytes=budget)
        balancer.backward(task_losses(out, y), features=z, task_params=model.heads.parameters())
        results.append(grads_of(model))
    for key in results[0]:
        torch.testing.assert_close(results[1][key], results[0][key], rtol=1e-9, atol=1e-12)


def test_blockwise_gram_equals_the_gram_of_the_jacobian() -> None:
    gen = torch.Generator().manual_seed(3)
    params = [
        torch.randn(n, dtype=torch.float64, generator=gen, requires_grad=True) for n in (4, 9, 2)
    ]
    x = torch.randn(5, dtype=torch.float64, generator=gen)
    objectives = torch.stack(
        [
            (params[0] ** 2).sum() * x[0],
            (params[1].sin() * x[1]).sum() + params[2].prod(),
            params[2].exp().sum(),
        ]
    )
    jac = jacobian(objectives, params)
    gram = blockwise_gram(objectives, params, max_bytes=3 * 8 * 4, scale=2.0)
    torch.testing.assert_close(gram, jac @ jac.T / 4.0, rtol=1e-12, atol=0.0)


class _NanGradient(torch.autograd.Function):
    """Identity whose backward turns every non-zero incoming gradient into NaN."""

    @staticmethod
    def forward(ctx: object, x: Tensor) -> Tensor:
        return x.clone()

    @staticmethod
    def backward(ctx: object, grad: Tensor) -> Tensor:
        return torch.where(grad != 0, torch.full_like(grad, float("nan")), grad)


def test_a_non_finite_gradient_names_the_task_and_leaves_the_method_untouched() -> None:
    model = TwoHeadNet(K).double()
    aggregator = fairmtl.make("fairgrad", warm_start=True)
    balancer = fairmtl.Balancer(aggregator, max_jacobian_bytes=K * 8 * 20)
    x, y = make_batch(k=K)
    _z, out = model(x)
    out = torch.cat([out[:, :1], _NanGradient.apply(out[:, 1:2]), out[:, 2:]], dim=1)
    losses = task_losses(out, y)  # finite, but task 1's gradient is NaN
    with pytest.raises(ValueError, match="task 1 has non-finite"):
        balancer.backward(losses, shared=model.encoder.parameters())
    assert aggregator.last_weights is None
    assert aggregator.state_dict()["previous"] is None


def test_grad_scaler_overflow_skips_the_step_and_lowers_the_scale() -> None:
    torch.manual_seed(7)
    model = TwoHeadNet(K)
    before = [p.detach().clone() for p in model.parameters()]
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**120)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = make_batch(k=K, dtype=torch.float32)
    _z, out = model(x)
    balancer = fairmtl.Balancer("fairgrad", max_jacobian_bytes=K * 4 * 50)
    balancer.backward(task_losses(out, y) * 1e6, shared=model.encoder.parameters(),
                      task_params=model.heads.parameters(), scaler=scaler)  # fmt: skip
    assert not torch.isfinite(next(model.encoder.parameters()).grad).all()
    assert balancer.aggregator.last_weights is None
    scaler.step(opt)
    scaler.update()
    assert scaler.get_scale() < 2.0**120
    for p, b in zip(model.parameters(), before):
        assert torch.equal(p.detach(), b)


def test_grad_scaler_keeps_the_blockwise_gradients() -> None:
    torch.manual_seed(5)
    model = TwoHeadNet(K).double()
    budget = K * 8 * 40
    reference = _step(model, fairmtl.Balancer("fairgrad", max_jacobian_bytes=budget))
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**14)
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    x, y = make_batch(k=K)
    model.zero_grad()
    _z, out = model(x)
    fairmtl.Balancer("fairgrad", max_jacobian_bytes=budget).backward(
        task_losses(out, y), shared=model.encoder.parameters(),
        task_params=model.heads.parameters(), scaler=scaler,
    )  # fmt: skip
    scaler.unscale_(opt)
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.grad, reference[name], rtol=1e-9, atol=1e-12)


class _WholeJacobian(Aggregator):
    def aggregate(self, jacobian: Tensor, losses: Tensor | None = None) -> Tensor:
        return jacobian.abs().sum(dim=0)


@pytest.mark.parametrize("bad", [0, -5, 1.5, True, "1GB"])
def test_invalid_bounds_are_refused(bad: object) -> None:
    with pytest.raises(ValueError, match="max_jacobian_bytes must be None or a positive int"):
        fairmtl.Balancer("fairgrad", max_jacobian_bytes=bad)  # type: ignore[arg-type]


def test_an_aggregator_that_needs_the_whole_jacobian_is_refused() -> None:
    with pytest.raises(TypeError, match="needs the whole Jacobian"):
        fairmtl.Balancer(_WholeJacobian(), max_jacobian_bytes=1 << 20)
