"""The pipeline: transform -> loss weights -> per-task gradients -> aggregator -> .grad."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import fairmtl
from fairmtl import InvalidLossError


class TwoHeadNet(nn.Module):
    def __init__(self, k: int = 3) -> None:
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 8), nn.Tanh())
        self.heads = nn.ModuleList(nn.Linear(8, 1) for _ in range(k))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.encoder(x)
        return z, torch.cat([h(z) for h in self.heads], dim=1)


def make_batch(
    k: int = 3, n: int = 32, dtype: torch.dtype = torch.float64
) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return torch.randn(n, 6, generator=gen, dtype=dtype), torch.randn(
        n, k, generator=gen, dtype=dtype
    )


def task_losses(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return ((out - y) ** 2).mean(dim=0)  # (K,), positive


def grads_of(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def run_step(
    model: TwoHeadNet, balancer: fairmtl.Balancer, *, features: bool = False
) -> dict[str, torch.Tensor]:
    x, y = make_batch()
    model.zero_grad()
    z, out = model(x)
    losses = task_losses(out, y)
    if features:
        balancer.backward(losses, features=z, task_params=model.heads.parameters())
    else:
        balancer.backward(
            losses, shared=model.encoder.parameters(), task_params=model.heads.parameters()
        )
    return grads_of(model)


@pytest.mark.parametrize("aggregator", ["sum", "mgda", "nash-mtl", "fairgrad"])
@pytest.mark.parametrize("transform", [None, "log", fairmtl.AlphaFairLoss(0.5)])
def test_loop_and_batched_jacobians_agree(aggregator: str, transform: object) -> None:
    torch.manual_seed(0)
    model = TwoHeadNet().double()
    batched = run_step(
        model, fairmtl.Balancer(aggregator, transform=transform, jacobian_method="batched")
    )
    looped = run_step(
        model, fairmtl.Balancer(aggregator, transform=transform, jacobian_method="loop")
    )
    assert batched.keys() == looped.keys() and len(batched) == len(list(model.parameters()))
    for name in batched:
        torch.testing.assert_close(batched[name], looped[name], rtol=1e-10, atol=1e-12)


def test_auto_jacobian_is_the_loop_on_cpu() -> None:
    """The default ("auto") takes the K-pass loop on the CPU: bit-identical gradients."""
    from fairmtl.jacobian import resolve_method

    assert resolve_method("auto", torch.device("cpu")) == "loop"
    assert resolve_method("auto", torch.device("meta")) == "batched"
    with pytest.raises(ValueError, match="method must be one of"):
        resolve_method("vmap", torch.device("cpu"))
    torch.manual_seed(0)
    model = TwoHeadNet().double()
    auto = run_step(model, fairmtl.Balancer("fairgrad"))
    looped = run_step(model, fairmtl.Balancer("fairgrad", jacobian_method="loop"))
    for name in auto:
        assert torch.equal(auto[name], looped[name]), name


def test_auto_takes_the_batched_call_for_a_small_features_jacobian(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Features mode: "auto" takes one vmapped call (the heads' small graph); the gradients
    agree with the loop's to rounding."""
    import fairmtl.balancer as balancer_module

    methods: list[str] = []
    original = balancer_module.jacobian

    def recording(objectives: torch.Tensor, inputs: list[torch.Tensor], method: str, **kw: bool):
        methods.append(method)
        return original(objectives, inputs, method, **kw)

    monkeypatch.setattr(balancer_module, "jacobian", recording)
    torch.manual_seed(0)
    model = TwoHeadNet().double()
    auto = run_step(model, fairmtl.Balancer("fairgrad"), features=True)
    looped = run_step(model, fairmtl.Balancer("fairgrad", jacobian_method="loop"), features=True)
    run_step(model, fairmtl.Balancer("fairgrad"))  # shared parameters: the loop on the CPU
    assert methods == ["batched", "loop", "auto"]
    for name in auto:
        torch.testing.assert_close(auto[name], looped[name], rtol=1e-10, atol=1e-12)


def test_sum_aggregator_equals_plain_backward_of_the_summed_loss() -> None:
    torch.manual_seed(1)
    model = TwoHeadNet().double()
    ours = run_step(model, fairmtl.Balancer("sum"))
    x, y = make_batch()
    model.zero_grad()
    task_losses(model(x)[1], y).sum().backward()
    for name, g in grads_of(model).items():
        torch.testing.assert_close(ours[name], g)


def test_shared_gets_the_direction_and_each_head_its_own_weighted_transformed_loss() -> None:
    torch.manual_seed(2)
    model = TwoHeadNet().double()
    agg = fairmtl.FairGrad(alpha=2.0)
    grads = run_step(model, fairmtl.Balancer(agg, transform="log"))
    x, y = make_batch()
    _z, out = model(x)
    logl = torch.log(task_losses(out, y))
    shared = list(model.encoder.parameters())
    jac = torch.stack(
        [
            torch.cat(
                [g.reshape(-1) for g in torch.autograd.grad(logl[i], shared, retain_graph=True)]
            )
            for i in range(3)
        ]
    )
    direction = agg(jac)
    flat = torch.cat(
        [grads[f"encoder.{n}"].reshape(-1) for n, _ in model.encoder.named_parameters()]
    )
    torch.testing.assert_close(flat, direction, rtol=1e-10, atol=1e-12)
    for i, head in enumerate(model.heads):
        own = torch.autograd.grad(logl[i], list(head.parameters()), retain_graph=True)
        torch.testing.assert_close(grads[f"heads.{i}.weight"], own[0])
        torch.testing.assert_close(grads[f"heads.{i}.bias"], own[1])


def test_features_mode_backpropagates_the_aggregated_representation_gradient() -> None:
    torch.manual_seed(3)
    model = TwoHeadNet().double()
    agg = fairmtl.MGDA()
    grads = run_step(model, fairmtl.Balancer(agg), features=True)
    x, y = make_batch()
    z, out = model(x)
    losses = task_losses(out, y)
    jz = torch.stack(
        [torch.autograd.grad(losses[i], z, retain_graph=True)[0].reshape(-1) for i in range(3)]
    )
    w = agg.weights(jz @ jz.T)
    # MGDA-UB: the encoder receives sum_i w_i grad_theta l_i with w from the features' Gram.
    model.zero_grad()
    (w.detach() * losses).sum().backward(inputs=list(model.encoder.parameters()))
    for name, p in model.encoder.named_parameters():
        torch.testing.assert_close(grads[f"encoder.{name}"], p.grad, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("optimizer_cls", [torch.optim.SGD, torch.optim.Adam, torch.optim.AdamW])
def test_training_with_any_optimizer_reduces_the_losses(optimizer_cls: type) -> None:
    torch.manual_seed(4)
    model = TwoHeadNet()
    opt = optimizer_cls(model.parameters(), lr=0.01)
    balancer = fairmtl.Balancer("fairgrad")
    x, y = make_batch(dtype=torch.float32)
    first = task_losses(model(x)[1], y).detach()
    for _ in range(60):
        opt.zero_grad()
        _z, out = model(x)
        balancer.backward(
            task_losses(out, y),
            shared=model.encoder.parameters(),
            task_params=model.heads.parameters(),
        )
        opt.step()
    last = task_losses(model(x)[1], y).detach()
    assert (last < first).all()


@pytest.mark.parametrize("aggregator", ["mgda", "nash-mtl", "fairgrad", "sum"])
@pytest.mark.parametrize("transform", [None, "log"])
def test_grad_scaler_changes_neither_direction_nor_magnitude(
    aggregator: str, transform: str | None
) -> None:
    torch.manual_seed(5)
    model = TwoHeadNet().double()
    reference = run_step(model, fairmtl.Balancer(aggregator, transform=transform))
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**14)
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    x, y = make_batch()
    model.zero_grad()
    _z, out = model(x)
    fairmtl.Balancer(aggregator, transform=transform).backward(
        task_losses(out, y),
        shared=model.encoder.parameters(),
        task_params=model.heads.parameters(),
        scaler=scaler,
    )
    scaler.unscale_(opt)
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.grad, reference[name], rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("aggregator", ["mgda", "fairgrad"])
def test_grad_scaler_overflow_skips_the_step_and_lowers_the_scale(aggregator: str) -> None:
    """A scale so large that the float32 gradients overflow: no method sees the Jacobian,
    the shared gradients are infinite, and the scaler skips the step and backs off."""
    torch.manual_seed(7)
    model = TwoHeadNet()
    before = [p.detach().clone() for p in model.parameters()]
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**120)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = make_batch(dtype=torch.float32)
    _z, out = model(x)
    balancer = fairmtl.Balancer(aggregator)
    balancer.backward(task_losses(out, y) * 1e6, shared=model.encoder.parameters(),
                      task_params=model.heads.parameters(), scaler=scaler)  # fmt: skip
    assert not torch.isfinite(next(model.encoder.parameters()).grad).all()
    assert balancer.aggregator.last_weights is None  # the method was never asked
    scaler.step(opt)
    scaler.update()
    assert scaler.get_scale() < 2.0**120
    for p, b in zip(model.parameters(), before):
        assert torch.equal(p.detach(), b)


@pytest.mark.parametrize("aggregator", ["mgda", "nash-mtl", "fairgrad"])
def test_scaling_the_losses_keeps_the_direction_of_scale_invariant_methods(aggregator: str) -> None:
    """Plain scaler.scale(losses) use: the direction is unchanged (its length may not be)."""
    torch.manual_seed(6)
    model = TwoHeadNet().double()
    plain = run_step(model, fairmtl.Balancer(aggregator))
    x, y = make_batch()
    model.zero_grad()
    _z, out = model(x)
    fairmtl.Balancer(aggregator).backward(
        task_losses(out, y) * 65536.0, shared=model.encoder.parameters()
    )
    d_plain = torch.cat(
        [plain[f"encoder.{n}"].reshape(-1) for n, _ in model.encoder.named_parameters()]
    )
    d_scaled = torch.cat([p.grad.reshape(-1) for p in model.encoder.parameters()])
    cos = d_plain @ d_scaled / (d_plain.norm() * d_scaled.norm())
    assert cos >= 1 - 1e-10


def test_gradients_accumulate_like_backward() -> None:
    model = TwoHeadNet().double()
    once = run_step(model, fairmtl.Balancer("mgda"))
    x, y = make_batch()
    _z, out = model(x)  # no zero_grad: accumulate on top
    fairmtl.Balancer("mgda").backward(
        task_losses(out, y), shared=model.encoder.parameters(), task_params=model.heads.parameters()
    )
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.grad, 2 * once[name])


# ---------------------------------------------------------------------------- bad input
def _losses_and_model() -> tuple[TwoHeadNet, torch.Tensor]:
    model = TwoHeadNet()
    x, y = make_batch(dtype=torch.float32)
    return model, task_losses(model(x)[1], y)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_loss_names_the_task_and_value(bad: float) -> None:
    model, losses = _losses_and_model()
    losses = torch.cat([losses[:2], torch.tensor([bad])])
    with pytest.raises(InvalidLossError, match=r"task 2 .*(nan|inf)"):
        fairmtl.Balancer("fairgrad").backward(losses, shared=model.encoder.parameters())


@pytest.mark.parametrize("transform", ["log", fairmtl.AlphaFairLoss(0.5), fairmtl.Log(offset=0.0)])
@pytest.mark.parametrize("value", [0.0, -0.25])
def test_non_positive_loss_under_log_transforms_names_the_task_and_value(
    transform: object, value: float
) -> None:
    model, losses = _losses_and_model()
    losses = torch.cat([losses[:1], torch.tensor([value]), losses[2:]])
    with pytest.raises(InvalidLossError, match=rf"task 1 has loss {value}"):
        fairmtl.Balancer("sum", transform=transform).backward(
            losses, shared=model.encoder.parameters()
        )


def test_offset_makes_negative_losses_usable_under_log() -> None:
    model, losses = _losses_and_model()
    shifted = losses - 1.0  # some may be negative now
    fairmtl.Balancer("mgda", transform=fairmtl.Log(offset=1.0)).backward(
        shifted, shared=model.encoder.parameters()
    )
    assert all(p.grad is not None for p in model.encoder.parameters())


def test_wrong_number_of_losses() -> None:
    model, losses = _losses_and_model()
    balancer = fairmtl.Balancer("sum", num_tasks=4)
    with pytest.raises(InvalidLossError, match="expected 4 task losses, got 3"):
        balancer.backward(losses, shared=model.encoder.parameters())
    learned = fairmtl.Balancer("sum")
    learned.backward(losses, shared=model.encoder.parameters(), retain_graph=True)
    with pytest.raises(InvalidLossError, match="expected 3 task losses, got 2"):
        learned.backward(losses[:2], shared=model.encoder.parameters())
    with pytest.raises(InvalidLossError, match="shape"):
        learned.backward(losses.reshape(3, 1), shared=model.encoder.parameters())


def test_empty_shared_parameters_and_missing_targets() -> None:
    _model, losses = _losses_and_model()
    with pytest.raises(ValueError, match="shared parameters is empty"):
        fairmtl.Balancer("sum").backward(losses, shared=[])
    with pytest.raises(ValueError, match="exactly one of"):
        fairmtl.Balancer("sum").backward(losses)
    frozen = nn.Linear(2, 2).requires_grad_(False)
    with pytest.raises(ValueError, match=r"shared\[0\] must be a tensor that requires grad"):
        fairmtl.Balancer("sum").backward(losses, shared=frozen.parameters())


def test_list_of_scalar_losses_and_state_dict() -> None:
    model, losses = _losses_and_model()
    balancer = fairmtl.Balancer(fairmtl.FairGrad(alpha=2.0, warm_start=True))
    balancer.backward(list(losses.unbind()), shared=model.encoder.parameters())
    restored = fairmtl.Balancer(fairmtl.FairGrad(alpha=2.0, warm_start=True))
    restored.load_state_dict(copy.deepcopy(balancer.state_dict()))
    assert restored.num_tasks == 3
    assert torch.equal(
        restored.aggregator.state_dict()["previous"], balancer.aggregator.state_dict()["previous"]
    )


def test_methods_of_the_wrong_kind_are_rejected_at_construction() -> None:
    with pytest.raises(TypeError, match="aggregator must be a Aggregator"):
        fairmtl.Balancer(aggregator=42)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="weighting must be a Weighting"):
        fairmtl.Balancer(weighting="fairgrad")
    with pytest.raises(TypeError, match="transform must be a LossTransform"):
        fairmtl.Balancer(transform="mgda")
    with pytest.raises(KeyError, match="unknown method"):
        fairmtl.Balancer(aggregator="fairgard")


def test_a_parameter_cannot_be_both_shared_and_task_specific() -> None:
    model, losses = _losses_and_model()
    both = [*model.encoder.parameters(), model.heads[0].weight]
    with pytest.raises(ValueError, match=r"task_params\[0\] is also among the shared"):
        fairmtl.Balancer("sum").backward(losses, shared=both, task_params=[model.heads[0].weight])


class _FixedWeights(fairmtl.GramianWeighting):
    """Weights (1, 2, 3) whatever the Gram matrix: makes head weighting checkable by hand."""

    def gram_weights(self, gram: torch.Tensor) -> torch.Tensor:
        return torch.tensor([1.0, 2.0, 3.0], dtype=gram.dtype)


def test_weight_heads_scales_each_heads_gradient_by_the_aggregator_weight() -> None:
    torch.manual_seed(0)
    model = TwoHeadNet().double()
    plain = run_step(model, fairmtl.Balancer(aggregator=_FixedWeights()))
    weighted = run_step(model, fairmtl.Balancer(aggregator=_FixedWeights(), weight_heads=True))
    for i, factor in enumerate([1.0, 2.0, 3.0]):
        for name in (f"heads.{i}.weight", f"heads.{i}.bias"):
            torch.testing.assert_close(weighted[name], factor * plain[name])
    for name in plain:
        if name.startswith("encoder"):
            torch.testing.assert_close(weighted[name], plain[name])


def test_weight_heads_needs_task_weights() -> None:
    class _NotGramian(fairmtl.Aggregator):
        def aggregate(self, jacobian, losses=None):
            return jacobian[0]

    with pytest.raises(ValueError, match="weight_heads"):
        fairmtl.Balancer(aggregator=_NotGramian(), weight_heads=True)


def test_aggregators_that_need_losses_receive_the_raw_losses() -> None:
    seen = []

    class _Recorder(fairmtl.Aggregator):
        requires_losses = True

        def aggregate(self, jacobian, losses=None):
            seen.append(losses)
            return jacobian.sum(0)

    model = TwoHeadNet().double()
    x, y = make_batch()
    _, out = model(x)
    losses = task_losses(out, y)
    fairmtl.Balancer(aggregator=_Recorder(), transform="log").backward(
        losses, shared=model.encoder.parameters()
    )
    torch.testing.assert_close(seen[0], losses.detach())
