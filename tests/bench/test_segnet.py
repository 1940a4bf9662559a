"""SegNet / SegNet-MTAN (MTAN, Liu et al. 2019): architecture facts, shapes, parameter
split, the dense losses and the scale-crop/flip augmentation."""

from __future__ import annotations

import math

import pytest
import torch

from fairmtl.bench.segnet import (
    SegNet,
    SegNetBackbone,
    SegNetMTAN,
    augment_sample,
    depth_loss,
    normal_loss,
    segmentation_loss,
)

NYU_HEADS = [("segmentation", 13), ("depth", 1), ("normal", 3)]


def _count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_parameter_counts_match_the_reference_models() -> None:
    # CAGrad's code reports its parameter counts relative to 24,981,069: the single-task
    # SegNet for 13-class segmentation. MTAN's paper gives SegNet-MTAN (3 tasks) 1.77x that.
    assert _count(SegNet([("segmentation", 13)])) == 24_981_069
    mtan = _count(SegNetMTAN(NYU_HEADS))
    assert mtan == 44_229_073
    assert round(mtan / 24_981_069, 2) == 1.77


def test_backbone_stages_follow_vgg16() -> None:
    backbone = SegNetBackbone()
    convs = [m for m in backbone.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 26  # 13 encoder + 13 decoder convolutions
    assert [c.out_channels for c in convs[:1]] == [64]
    enc_out = [backbone.conv_block_enc[s] for s in range(5)]
    widths = [[m.out_channels for m in b.modules() if isinstance(m, torch.nn.Conv2d)][-1]
              for b in enc_out]  # fmt: skip
    assert widths == [64, 128, 256, 512, 512]


@pytest.mark.parametrize("size", [(32, 64), (40, 56)])
def test_output_shapes_and_head_transforms(size: tuple[int, int]) -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 3, *size)
    for model in (SegNet(NYU_HEADS, width_div=8), SegNetMTAN(NYU_HEADS, width_div=8)):
        model.eval()
        seg, depth, normal = model(x)
        assert seg.shape == (2, 13, *size)
        assert depth.shape == (2, 1, *size)
        assert normal.shape == (2, 3, *size)
        assert torch.allclose(seg.exp().sum(dim=1), torch.ones(2, *size), atol=1e-5)
        assert torch.allclose(normal.norm(dim=1), torch.ones(2, *size), atol=1e-5)


def test_too_small_or_wrong_inputs_are_rejected() -> None:
    model = SegNet(NYU_HEADS, width_div=8)
    with pytest.raises(ValueError, match=">= 32"):
        model(torch.zeros(1, 3, 16, 64))
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        model(torch.zeros(1, 1, 32, 32))
    with pytest.raises(ValueError, match="kind"):
        SegNet([("edges", 1)])
    with pytest.raises(ValueError, match="3 channels"):
        SegNetMTAN([("normal", 2)])
    with pytest.raises(ValueError, match="task_attention"):
        SegNetMTAN(NYU_HEADS, task_attention="both")  # type: ignore[arg-type]


def _ids(params: list[torch.Tensor]) -> set[int]:
    return {id(p) for p in params}


def test_segnet_split_and_features_mode() -> None:
    model = SegNet(NYU_HEADS, width_div=8)
    shared, heads = _ids(model.shared_parameters()), _ids(model.task_parameters())
    assert shared and heads and not shared & heads
    assert shared | heads == _ids(list(model.parameters()))
    x = torch.randn(1, 3, 32, 32)
    model.eval()
    direct = model(x)
    split = model.decode(model.represent(x))
    assert all(torch.equal(a, b) for a, b in zip(direct, split))
    assert model.represent(x).shape == (1, 8, 32, 32)
    layer = model.last_shared_layer()
    assert _ids(list(layer.parameters())) <= shared


@pytest.mark.parametrize("mode", ["shared", "task"])
def test_mtan_parameter_split(mode: str) -> None:
    model = SegNetMTAN(NYU_HEADS, width_div=8, task_attention=mode)  # type: ignore[arg-type]
    shared = _ids(model.shared_parameters())
    per_task = [_ids(model.task_parameters(t)) for t in range(3)]
    assert _ids(model.task_parameters()) == set().union(*per_task)
    assert not any(shared & p for p in per_task)
    assert not any(per_task[i] & per_task[j] for i in range(3) for j in range(i + 1, 3))
    assert shared | set().union(*per_task) == _ids(list(model.parameters()))
    attention = [_ids(list(model.attention[t].parameters())) for t in range(3)]
    heads = [_ids(list(model.heads[t].parameters())) for t in range(3)]
    for t in range(3):
        if mode == "shared":  # the references: only the prediction heads are task-specific
            assert per_task[t] == heads[t] and attention[t] <= shared
        else:
            assert per_task[t] == heads[t] | attention[t]
    # the conv blocks between attention gates are shared by the tasks in both modes
    assert _ids(list(model.encoder_block_att.parameters())) <= shared


def test_mtan_features_mode_is_refused_with_the_reason() -> None:
    model = SegNetMTAN(NYU_HEADS, width_div=8)
    with pytest.raises(NotImplementedError, match="features mode is not defined"):
        model.represent(torch.zeros(1, 3, 32, 32))


def test_a_task_loss_reaches_only_its_own_attention() -> None:
    torch.manual_seed(0)
    model = SegNetMTAN(NYU_HEADS, width_div=8)
    outputs = model(torch.randn(2, 3, 32, 32))
    outputs[1].mean().backward()  # depth only

    def touched(module: torch.nn.Module) -> bool:
        return any(p.grad is not None and bool(p.grad.abs().sum() > 0) for p in module.parameters())

    assert touched(model.attention[1]) and touched(model.heads[1]) and touched(model.encoder)
    assert not touched(model.attention[0]) and not touched(model.attention[2])
    assert not touched(model.heads[0]) and not touched(model.heads[2])


def test_segmentation_loss_ignores_minus_one() -> None:
    logits = torch.tensor([[[[2.0, 0.0]], [[0.0, 1.0]]]])  # (1, 2 classes, 1, 2)
    logp = torch.log_softmax(logits, dim=1)
    target = torch.tensor([[[0, -1]]])
    expected = -logp[0, 0, 0, 0]
    assert segmentation_loss(logp, target).item() == pytest.approx(expected.item())
    everything_ignored = segmentation_loss(logp, torch.full((1, 1, 2), -1))
    assert everything_ignored.item() == 0.0


def test_depth_loss_uses_valid_pixels_only() -> None:
    pred = torch.ones(1, 1, 1, 3)
    target = torch.tensor([[[[0.0, 3.0, 1.5]]]])
    assert depth_loss(pred, target).item() == pytest.approx((2.0 + 0.5) / 2)
    assert depth_loss(pred, torch.zeros_like(pred)).item() == 0.0


def test_normal_loss_is_one_minus_mean_cosine_on_valid_pixels() -> None:
    s = math.sqrt(0.5)
    pred = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0], [0.0, 0.0, 0.0]])[None, :, None, :]
    target = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]])[None, :, None, :]
    target[0, :, 0, 1] = torch.tensor([s, s, 0.0])
    # pixel 0: cos 1; pixel 1: cos 1/sqrt(2); pixel 2: target all-zero, ignored
    expected = 1 - (1.0 + s) / 2
    assert normal_loss(pred, target).item() == pytest.approx(expected)


def _sample(h: int = 32, w: int = 48) -> list[torch.Tensor]:
    torch.manual_seed(1)
    image = torch.rand(3, h, w)
    label = torch.randint(-1, 13, (h, w))
    depth = torch.full((1, h, w), 3.0)
    depth[0, :, :4] = 0.0
    normal = torch.nn.functional.normalize(torch.randn(3, h, w), dim=0)
    return [image, label, depth, normal]


KINDS = ["image", "label", "depth", "normal"]


def _draw(seed: int) -> tuple[float, bool]:
    """The scale and flip that augment_sample draws first from a generator seeded ``seed``."""
    g = torch.Generator().manual_seed(seed)
    scale = (1.0, 1.2, 1.5)[int(torch.randint(3, (1,), generator=g))]
    h, w = int(32 / scale), int(48 / scale)
    torch.randint(32 - h + 1, (1,), generator=g)
    torch.randint(48 - w + 1, (1,), generator=g)
    return scale, bool(torch.rand(1, generator=g) < 0.5)


def test_augmentation_is_drawn_from_the_generator() -> None:
    sample = _sample()
    a = augment_sample(sample, KINDS, torch.Generator().manual_seed(3))
    b = augment_sample(sample, KINDS, torch.Generator().manual_seed(3))
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    outs = [augment_sample(sample, KINDS, torch.Generator().manual_seed(s))[0] for s in range(8)]
    assert len({o.sum().item() for o in outs}) > 1


def test_flip_mirrors_every_map_and_negates_normal_x() -> None:
    sample = _sample()
    seed = next(s for s in range(100) if _draw(s) == (1.0, True))
    image, label, depth, normal = augment_sample(sample, KINDS, torch.Generator().manual_seed(seed))
    assert torch.equal(image, sample[0].flip(-1))
    assert torch.equal(label, sample[1].flip(-1))
    assert torch.equal(depth, sample[2].flip(-1))
    assert torch.equal(normal[0], -sample[3][0].flip(-1))
    assert torch.equal(normal[1:], sample[3][1:].flip(-1))
    seed = next(s for s in range(100) if _draw(s) == (1.0, False))
    out = augment_sample(sample, KINDS, torch.Generator().manual_seed(seed))
    assert all(torch.equal(x, y) for x, y in zip(out, sample))


def test_scale_crop_divides_depth_and_keeps_labels_and_missing_depth() -> None:
    sample = _sample()
    seed = next(s for s in range(100) if _draw(s)[0] == 1.5)
    image, label, depth, normal = augment_sample(sample, KINDS, torch.Generator().manual_seed(seed))
    assert image.shape == (3, 32, 48) and label.shape == (32, 48) and label.dtype == torch.int64
    assert set(depth.unique().tolist()) <= {0.0, 2.0}  # 3 / 1.5, and missing stays missing
    assert (depth == 2.0).any()
    assert set(label.unique().tolist()) <= set(sample[1].unique().tolist())
    assert normal.shape == (3, 32, 48)
