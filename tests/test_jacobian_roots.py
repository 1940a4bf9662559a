"""The loop's passes started past the stack of the losses (fairmtl.jacobian.task_roots)."""

from __future__ import annotations

import importlib
from typing import Any, ClassVar

import pytest
import torch
from torch import Tensor, nn

import fairmtl

jacobian_module = importlib.import_module("fairmtl.jacobian")
K = 4


class _Count(torch.autograd.Function):
    """The identity, counting its backward calls per head."""

    calls: ClassVar[list[int]] = []

    @staticmethod
    def forward(ctx: Any, x: Tensor, index: int) -> Tensor:
        ctx.index = index
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        _Count.calls[ctx.index] += 1
        return grad, None


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(5, 12), nn.Tanh(), nn.Linear(12, 6), nn.Tanh())
        self.heads = nn.ModuleList(
            nn.Sequential(nn.Linear(6, 7), nn.Tanh(), nn.Linear(7, 1)) for _ in range(K)
        )

    def losses(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """The representation and the stacked losses (each head's own mean squared error)."""
        z = self.encoder(x)
        per_task = [
            ((_Count.apply(h(z), i).squeeze(1) - y[:, i]) ** 2).mean()
            for i, h in enumerate(self.heads)
        ]
        return z, torch.stack(per_task)


def _batch() -> tuple[Tensor, Tensor]:
    gen = torch.Generator().manual_seed(0)
    return torch.randn(16, 5, generator=gen, dtype=torch.float64), torch.randn(
        16, K, generator=gen, dtype=torch.float64
    )


def _model() -> Net:
    torch.manual_seed(0)
    return Net().double()


OBJECTIVES = {
    "losses": lambda l: l,
    "weighted log": lambda l: torch.tensor([0.5, 2.0, 1.0, 3.0], dtype=l.dtype) * torch.log(l),
    "alpha-fair, scaled": lambda l: 1024.0 * fairmtl.AlphaFairLoss(0.5)(l),
}


@pytest.mark.parametrize("name", list(OBJECTIVES))
def test_rows_are_the_same_to_the_bit_and_each_head_runs_once_per_pass(name: str) -> None:
    model = _model()
    shared = list(model.encoder.parameters())
    z, losses = model.losses(*_batch())
    objectives = OBJECTIVES[name](losses)
    _Count.calls = [0] * K
    plain = fairmtl.jacobian(objectives, shared, "loop")
    assert _Count.calls == [K] * K  # every pass runs every head's backward
    roots = jacobian_module.task_roots(objectives, losses)
    assert roots is not None and len(roots.outputs) == K
    _Count.calls = [0] * K
    fast = fairmtl.jacobian(objectives, shared, "loop", roots=roots)
    assert _Count.calls == [1] * K  # pass i runs head i only
    assert torch.equal(fast, plain)
    features = fairmtl.jacobian(objectives, [z], "loop", roots=roots)
    assert torch.equal(features, fairmtl.jacobian(objectives, [z], "loop"))


def test_no_roots_where_the_losses_are_not_a_stack_of_scalars_with_graphs() -> None:
    model = _model()
    x, y = _batch()
    z = model.encoder(x)
    out = torch.cat([h(z) for h in model.heads], dim=1)
    vector = ((out - y) ** 2).mean(dim=0)  # one tensor, no stack
    assert jacobian_module.task_roots(vector, vector) is None
    constant = torch.stack([vector[0], torch.tensor(1.0, dtype=vector.dtype)])
    assert jacobian_module.task_roots(constant, constant) is None  # a loss without a graph
    rows = torch.stack([vector[:2], vector[2:]])  # (2, 2): not K scalars
    assert jacobian_module.task_roots(rows, rows) is None
    assert jacobian_module.task_roots(vector.detach(), vector.detach()) is None


def _step(
    balancer: fairmtl.Balancer, stacked: bool, features: bool, amp: bool = False
) -> dict[str, Tensor]:
    model = _model()
    x, y = _batch()
    z, losses = model.losses(x, y)
    if not stacked:  # the same losses as one vector: the plain passes
        out = torch.cat([h(z) for h in model.heads], dim=1)
        losses = ((out - y) ** 2).mean(dim=0)
    where: dict[str, Any] = {"features": z} if features else {"shared": model.encoder.parameters()}
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**14) if amp else None
    balancer.backward(losses, task_params=model.heads.parameters(), scaler=scaler, **where)
    if scaler is not None:
        scaler.unscale_(torch.optim.SGD(model.parameters(), lr=0.0))
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("amp", [False, True])
@pytest.mark.parametrize("features", [False, True])
@pytest.mark.parametrize("bound", [None, 400])
def test_the_balancer_starts_past_the_stack_with_the_same_gradients(
    monkeypatch: pytest.MonkeyPatch, features: bool, bound: int | None, amp: bool
) -> None:
    calls: list[bool] = []
    original = jacobian_module._block_jacobian

    def recording(*args: Any, **kwargs: Any) -> Tensor:
        calls.append(kwargs.get("roots") is not None)
        return original(*args, **kwargs)

    monkeypatch.setattr(jacobian_module, "_block_jacobian", recording)

    def make() -> fairmtl.Balancer:
        return fairmtl.Balancer("fairgrad", transform="log", max_jacobian_bytes=bound)

    stacked = _step(make(), stacked=True, features=features, amp=amp)
    assert calls and all(calls)  # "auto" on the CPU: the loop, from the roots (features too)
    calls.clear()
    vector = _step(make(), stacked=False, features=features, amp=amp)
    assert not any(calls)
    assert stacked.keys() == vector.keys()
    for name in stacked:
        torch.testing.assert_close(stacked[name], vector[name], rtol=1e-12, atol=1e-14)
