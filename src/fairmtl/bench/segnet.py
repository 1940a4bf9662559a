"""SegNet and SegNet-MTAN for dense scene understanding (NYUv2, Cityscapes).

Models of Liu, Johns & Davison, "End-to-End Multi-Task Learning with Attention" (MTAN,
CVPR 2019), in the form the gradient-balancing papers train them (CAGrad, Nash-MTL,
FAMO and FairGrad, Ban & Ji 2024, Sec. 5.1 / Tables 2-3):

* :class:`SegNetBackbone`: a VGG-16-style encoder-decoder (Badrinarayanan et al. 2017).
  Five stages with ``[64, 128, 256, 512, 512]`` channels and 2, 2, 3, 3, 3 convolutions
  (3x3 conv, BatchNorm, ReLU); 2x2 max-pooling whose indices drive the decoder's
  max-unpooling; the decoder mirrors the encoder (3, 3, 3, 2, 2 convolutions), ending
  with 64 channels at the input resolution.
* :class:`SegNet`: the backbone shared by all tasks, one prediction head per task on
  its last feature map ("SegNet split" of the references).
* :class:`SegNetMTAN`: the backbone plus, per task, one soft-attention gate per encoder
  and decoder stage (1x1 conv, BN, ReLU, 1x1 conv, BN, sigmoid), whose mask multiplies
  the backbone's stage output; between stages the task's features pass through a 3x3
  conv block shared by the tasks (max-pooled in the encoder, bilinearly upsampled in the
  decoder), then the task's head.

Every head is a 3x3 conv (64 -> 64) followed by a 1x1 conv to the task's channels;
segmentation returns log-probabilities (log-softmax over classes), depth one channel,
surface normals three channels normalised to unit length. Convolutions are initialised
with Xavier-normal weights and zero biases, BatchNorm with weight 1 and bias 0.

Parameter split of SegNet-MTAN. The references the published tables come from
(Nash-MTL's code, which FairGrad extends) call every parameter outside the prediction
heads *shared*, the task attention gates included: the gradient method combines the
per-task gradients over backbone + attention, and only the heads are task-specific.
That is the default here (``task_attention="shared"``). ``task_attention="task"``
treats each task's attention gates as that task's parameters instead (as CAGrad's
code does: its shared modules leave the task attention out); the per-stage conv blocks
between gates are shared by all tasks in both modes.

Inputs need not be multiples of 32: unpooling restores each stage's exact size and
the attention decoder upsamples to it, so any height and width >= 32 works (for
multiples of 32 this equals the references' ``scale_factor=2`` upsampling).

This module also holds the pieces the two scene benchmarks share: the dense losses of
the references, the random scale-crop and flip augmentation, and the loader of the
MTAN ``{split}/{modality}/{i}.npy`` layout with its validation
(:class:`SceneBenchmark`); :mod:`fairmtl.bench.nyuv2` and
:mod:`fairmtl.bench.cityscapes` configure it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fairmtl.bench.base import Batch, Benchmark, DatasetError, MultiTaskModel, TaskSpec, TrainConfig
from fairmtl.metrics import Depth, Normal, Segmentation, TaskMetric, delta_m

__all__ = [
    "FILTERS",
    "HeadKind",
    "SceneBenchmark",
    "SceneSplit",
    "SegNet",
    "SegNetBackbone",
    "SegNetMTAN",
    "augment_sample",
    "depth_loss",
    "normal_loss",
    "segmentation_loss",
]

FILTERS = (64, 128, 256, 512, 512)
"""Channels of SegNet's five stages (VGG-16)."""

HeadKind = Literal["segmentation", "depth", "normal"]
_KINDS = ("segmentation", "depth", "normal")
MIN_SIZE = 32
"""Smallest input height/width: five 2x2 poolings must leave at least one pixel."""


# ----------------------------------------------------------------------------------------
# building blocks
# ----------------------------------------------------------------------------------------


def _conv_block(cin: int, cout: int) -> nn.Sequential:
    """3x3 convolution, BatchNorm, ReLU."""
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU())


def _attention_gate(cin: int, cmid: int, cout: int) -> nn.Sequential:
    """MTAN's attention mask: 1x1 conv, BN, ReLU, 1x1 conv, BN, sigmoid."""
    return nn.Sequential(
        nn.Conv2d(cin, cmid, 1), nn.BatchNorm2d(cmid), nn.ReLU(),
        nn.Conv2d(cmid, cout, 1), nn.BatchNorm2d(cout), nn.Sigmoid(),
    )  # fmt: skip


def _head(channels: int, out: int) -> nn.Sequential:
    """Prediction head: 3x3 conv (no BN/ReLU), then a 1x1 conv to ``out`` channels."""
    return nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1), nn.Conv2d(channels, out, 1))


def _initialise(module: nn.Module) -> None:
    """Xavier-normal conv weights, zero biases; BatchNorm weight 1, bias 0 (as MTAN's code)."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.xavier_normal_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def _filters(width_div: int) -> tuple[int, ...]:
    if not isinstance(width_div, int) or isinstance(width_div, bool) or width_div < 1:
        raise ValueError(f"width_div must be a positive int, got {width_div!r}")
    return tuple(max(1, f // width_div) for f in FILTERS)


def _check_heads(heads: Sequence[tuple[str, int]]) -> list[tuple[str, int]]:
    out = []
    if not heads:
        raise ValueError("at least one task head is needed")
    for i, item in enumerate(heads):
        if not (isinstance(item, (tuple, list)) and len(item) == 2):
            raise ValueError(f"heads[{i}] must be (kind, channels), got {item!r}")
        kind, channels = item
        if kind not in _KINDS:
            raise ValueError(f"heads[{i}]: kind must be one of {_KINDS}, got {kind!r}")
        if not isinstance(channels, int) or isinstance(channels, bool) or channels < 1:
            raise ValueError(f"heads[{i}]: channels must be a positive int, got {channels!r}")
        if kind == "normal" and channels != 3:
            raise ValueError(f"heads[{i}]: a normal head has 3 channels, got {channels}")
        if kind == "depth" and channels != 1:
            raise ValueError(f"heads[{i}]: a depth head has 1 channel, got {channels}")
        out.append((kind, channels))
    return out


def _finish(kind: str, x: Tensor) -> Tensor:
    """A head's raw output -> the task's prediction."""
    if kind == "segmentation":
        return F.log_softmax(x, dim=1)
    if kind == "normal":
        return x / x.norm(p=2, dim=1, keepdim=True).clamp_min(1e-12)
    return x


def _check_input(x: Tensor) -> None:
    if x.dim() != 4 or x.shape[1] != 3:
        raise ValueError(f"SegNet expects images of shape (B, 3, H, W), got {tuple(x.shape)}")
    if x.shape[2] < MIN_SIZE or x.shape[3] < MIN_SIZE:
        raise ValueError(
            f"SegNet needs H and W >= {MIN_SIZE} (five 2x2 poolings), got {tuple(x.shape[2:])}"
        )


# ----------------------------------------------------------------------------------------
# the shared SegNet
# ----------------------------------------------------------------------------------------


@dataclass
class SegNetFeatures:
    """The backbone's intermediate maps, indexed by stage ``s = 0..4`` (0 = full size).

    ``enc_in[s]``: output of the stage's first conv block; ``enc_out[s]``: the stage's
    output before pooling; ``pooled``: the last stage pooled (the bottleneck);
    ``up[s]``: the unpooled decoder input at stage ``s``; ``dec_out[s]``: the decoder
    stage's output (``dec_out[0]`` is the backbone's final 64-channel map).
    """

    enc_in: list[Tensor] = field(default_factory=list)
    enc_out: list[Tensor] = field(default_factory=list)
    pooled: Tensor | None = None
    up: list[Tensor] = field(default_factory=list)
    dec_out: list[Tensor] = field(default_factory=list)


class SegNetBackbone(nn.Module):
    """SegNet's encoder-decoder (VGG-16 layout), as shared by every task.

    ``width_div`` divides every stage's channels (1 = the published model; larger values
    give the reduced CPU configurations).
    """

    def __init__(self, width_div: int = 1) -> None:
        super().__init__()
        f = _filters(width_div)
        self.filters = f
        # encoder stage s: encoder_block[s] then conv_block_enc[s] (1 or 2 more convs)
        self.encoder_block = nn.ModuleList(
            [_conv_block(3 if s == 0 else f[s - 1], f[s]) for s in range(5)]
        )
        self.conv_block_enc = nn.ModuleList(
            [_conv_block(f[s], f[s]) if s < 2
             else nn.Sequential(_conv_block(f[s], f[s]), _conv_block(f[s], f[s]))
             for s in range(5)]
        )  # fmt: skip
        # decoder stage s: decoder_block[s] (f[s] -> f[s-1]) then conv_block_dec[s]
        self.decoder_block = nn.ModuleList(
            [_conv_block(f[0], f[0]) if s == 0 else _conv_block(f[s], f[s - 1]) for s in range(5)]
        )
        self.conv_block_dec = nn.ModuleList(
            [_conv_block(f[max(s - 1, 0)], f[max(s - 1, 0)]) if s < 2
             else nn.Sequential(_conv_block(f[s - 1], f[s - 1]), _conv_block(f[s - 1], f[s - 1]))
             for s in range(5)]
        )  # fmt: skip

    @property
    def out_channels(self) -> int:
        return self.filters[0]

    def features(self, x: Tensor) -> SegNetFeatures:
        """Every intermediate map the attention modules read."""
        _check_input(x)
        feats = SegNetFeatures()
        indices: list[Tensor] = []
        h = x
        for s in range(5):
            feats.enc_in.append(self.encoder_block[s](h))
            feats.enc_out.append(self.conv_block_enc[s](feats.enc_in[s]))
            h, idx = F.max_pool2d(feats.enc_out[s], 2, 2, return_indices=True)
            indices.append(idx)
        feats.pooled = h
        up: list[Tensor | None] = [None] * 5
        dec: list[Tensor | None] = [None] * 5
        for s in reversed(range(5)):
            size = feats.enc_out[s].shape[-2:]
            u = F.max_unpool2d(h, indices[s], (2, 2), (2, 2), output_size=size)
            up[s] = u
            h = self.conv_block_dec[s](self.decoder_block[s](u))
            dec[s] = h
        feats.up = [t for t in up if t is not None]
        feats.dec_out = [t for t in dec if t is not None]
        return feats

    def forward(self, x: Tensor) -> Tensor:
        """The final decoder map ``(B, 64 / width_div, H, W)``."""
        return self.features(x).dec_out[0]


class SegNet(MultiTaskModel):
    """Multi-task SegNet: the shared backbone, one head per task on its last feature map.

    ``heads`` lists ``(kind, channels)`` per task, kind one of ``"segmentation"``
    (``channels`` = number of classes), ``"depth"`` (1) and ``"normal"`` (3). Features
    mode splits at the backbone's last map (:meth:`represent` / :meth:`decode`).
    """

    def __init__(self, heads: Sequence[tuple[str, int]], width_div: int = 1) -> None:
        self.kinds = [k for k, _ in _check_heads(heads)]
        backbone = SegNetBackbone(width_div)
        c = backbone.out_channels
        super().__init__(backbone, [_head(c, n) for _, n in heads])
        _initialise(self)

    @property
    def backbone(self) -> SegNetBackbone:
        backbone: SegNetBackbone = self.encoder  # type: ignore[assignment]
        return backbone

    def decode(self, z: Tensor) -> list[Tensor]:
        return [_finish(kind, head(z)) for kind, head in zip(self.kinds, self.heads)]

    def last_shared_layer(self) -> nn.Module:
        """The backbone's last conv block (GradNorm's ``layer``)."""
        return self.backbone.conv_block_dec[0]


class _TaskAttention(nn.Module):
    """One task's attention gates: one per encoder stage and one per decoder stage."""

    def __init__(self, f: Sequence[int]) -> None:
        super().__init__()
        self.encoder = nn.ModuleList(
            [_attention_gate(f[0], f[0], f[0]) if s == 0 else _attention_gate(2 * f[s], f[s], f[s])
             for s in range(5)]
        )  # fmt: skip
        self.decoder = nn.ModuleList(
            [_attention_gate(2 * f[0], f[0], f[0]) if s == 0
             else _attention_gate(f[s] + f[s - 1], f[s - 1], f[s - 1])
             for s in range(5)]
        )  # fmt: skip


class SegNetMTAN(MultiTaskModel):
    """SegNet-MTAN (Liu, Johns & Davison 2019): SegNet with per-task attention modules.

    Per task and encoder stage ``s``, the task's gate reads the stage's first map (and
    the task's features from stage ``s-1``) and masks the stage output; a conv block
    shared by the tasks (``encoder_block_att[s]``) and 2x2 max-pooling carry the masked
    map to the next stage. The decoder does the same with bilinear upsampling and the
    shared ``decoder_block_att[s]``; the task's head reads its masked stage-0 output.

    ``task_attention``: ``"shared"`` (default, the references' split: the gates are
    among :meth:`shared_parameters`) or ``"task"`` (each task's gates are in
    :meth:`task_parameters`). Features mode is not defined for MTAN (there is no single
    shared representation): :meth:`represent` and :meth:`decode` raise.
    """

    def __init__(
        self,
        heads: Sequence[tuple[str, int]],
        width_div: int = 1,
        task_attention: Literal["shared", "task"] = "shared",
    ) -> None:
        checked = _check_heads(heads)
        if task_attention not in ("shared", "task"):
            raise ValueError(f"task_attention must be 'shared' or 'task', got {task_attention!r}")
        backbone = SegNetBackbone(width_div)
        f = backbone.filters
        super().__init__(backbone, [_head(f[0], n) for _, n in checked])
        self.kinds = [k for k, _ in checked]
        self.task_attention = task_attention
        self.attention = nn.ModuleList([_TaskAttention(f) for _ in checked])
        self.encoder_block_att = nn.ModuleList(
            [_conv_block(f[s], f[s + 1] if s < 4 else f[4]) for s in range(5)]
        )
        self.decoder_block_att = nn.ModuleList(
            [_conv_block(f[0], f[0]) if s == 0 else _conv_block(f[s], f[s - 1] if s < 4 else f[4])
             for s in range(5)]
        )  # fmt: skip
        _initialise(self)

    @property
    def backbone(self) -> SegNetBackbone:
        backbone: SegNetBackbone = self.encoder  # type: ignore[assignment]
        return backbone

    def _task_features(self, t: int, g: SegNetFeatures) -> Tensor:
        att: _TaskAttention = self.attention[t]  # type: ignore[assignment]
        prev: Tensor | None = None
        for s in range(5):
            inp = g.enc_in[s] if prev is None else torch.cat((g.enc_in[s], prev), dim=1)
            masked = att.encoder[s](inp) * g.enc_out[s]
            prev = F.max_pool2d(self.encoder_block_att[s](masked), 2, 2)
        assert prev is not None
        for s in reversed(range(5)):
            size = g.up[s].shape[-2:]
            x = F.interpolate(prev, size=size, mode="bilinear", align_corners=True)
            x = self.decoder_block_att[s](x)
            prev = att.decoder[s](torch.cat((g.up[s], x), dim=1)) * g.dec_out[s]
        return prev

    def forward(self, x: Tensor) -> list[Tensor]:
        g = self.backbone.features(x)
        return [
            _finish(kind, head(self._task_features(t, g)))
            for t, (kind, head) in enumerate(zip(self.kinds, self.heads))
        ]

    def represent(self, x: Tensor) -> Tensor:
        raise NotImplementedError(
            "features mode is not defined for SegNet-MTAN: each task reads its own "
            "attention-masked features, so there is no single shared representation; "
            "use the plain SegNet (data.model=segnet) or a method without features mode"
        )

    def decode(self, z: Tensor) -> list[Tensor]:
        self.represent(z)  # raises
        return []  # pragma: no cover

    def _shared_modules(self) -> list[nn.Module]:
        mods: list[nn.Module] = [self.encoder, self.encoder_block_att, self.decoder_block_att]
        if self.task_attention == "shared":
            mods.append(self.attention)
        return mods

    def shared_parameters(self) -> list[Tensor]:
        return [p for m in self._shared_modules() for p in m.parameters()]

    def task_parameters(self, task: int | None = None) -> list[Tensor]:
        """Head ``task``'s parameters (and its attention gates with ``task_attention="task"``),
        or those of every task."""
        tasks = range(len(self.heads)) if task is None else [task]
        out: list[Tensor] = []
        for t in tasks:
            out.extend(self.heads[t].parameters())
            if self.task_attention == "task":
                out.extend(self.attention[t].parameters())
        return out

    def last_shared_layer(self) -> nn.Module:
        """The backbone's last conv block (GradNorm's ``layer``)."""
        return self.backbone.conv_block_dec[0]


# ----------------------------------------------------------------------------------------
# losses (as the references' ``calc_loss``; empty masks give 0 instead of NaN)
# ----------------------------------------------------------------------------------------


def segmentation_loss(log_probs: Tensor, target: Tensor, ignore_index: int = -1) -> Tensor:
    """Mean NLL of the target classes over non-ignored pixels (0 when every pixel is ignored)."""
    total = F.nll_loss(log_probs, target, ignore_index=ignore_index, reduction="sum")
    count = (target != ignore_index).sum().clamp_min(1)
    return total / count


def depth_loss(pred: Tensor, target: Tensor) -> Tensor:
    """Mean absolute error over valid pixels (target != 0); ``(B, 1, H, W)`` tensors."""
    valid = target != 0
    total = torch.where(valid, (pred - target).abs(), torch.zeros_like(pred)).sum()
    return total / valid.sum().clamp_min(1)


def normal_loss(pred: Tensor, target: Tensor) -> Tensor:
    """``1 - mean cosine`` over valid pixels (target normal not all zero); ``(B, 3, H, W)``.

    ``pred`` is unit length (the model normalises it); ``target`` is used as stored.
    """
    valid = (target != 0).any(dim=1, keepdim=True)
    dot = (pred * target).sum(dim=1, keepdim=True)
    total = torch.where(valid, dot, torch.zeros_like(dot)).sum()
    return 1 - total / valid.sum().clamp_min(1)


_LOSSES: dict[str, Callable[[Tensor, Tensor], Tensor]] = {"segmentation": segmentation_loss, "depth": depth_loss, "normal": normal_loss}


# ----------------------------------------------------------------------------------------
# augmentation
# ----------------------------------------------------------------------------------------

SCALES = (1.0, 1.2, 1.5)
"""Random scale-crop factors of the references' augmentation."""


def augment_sample(
    tensors: Sequence[Tensor], kinds: Sequence[str], generator: torch.Generator
) -> list[Tensor]:
    """The references' training augmentation of one sample, drawn from ``generator``.

    ``tensors`` are channels-first ``(C, H, W)`` (labels ``(H, W)``), ``kinds`` their
    roles (``"image"``, ``"label"``, ``"depth"``, ``"normal"``). Four draws per sample,
    in this order: a scale ``s`` from :data:`SCALES`; the crop's top and left corner;
    a horizontal flip with probability 0.5.

    Scale-crop: a ``int(H / s) x int(W / s)`` window at the drawn corner is resized back
    to ``H x W``: bilinearly (``align_corners=True``) for the image and the normals,
    nearest for labels and depth; depth is divided by ``s`` (a closer camera). Flip:
    every map is mirrored left-right and the normals' x component is negated. As in the
    references (MTAN issue #34's ``RandomScaleCrop``), the normals are not renormalised
    after the bilinear resize.
    """
    height, width = tensors[0].shape[-2:]
    scale = SCALES[int(torch.randint(len(SCALES), (1,), generator=generator))]
    h, w = int(height / scale), int(width / scale)
    top = int(torch.randint(height - h + 1, (1,), generator=generator))
    left = int(torch.randint(width - w + 1, (1,), generator=generator))
    flip = bool(torch.rand(1, generator=generator) < 0.5)
    out: list[Tensor] = []
    for t, kind in zip(tensors, kinds):
        if scale != 1.0:
            crop = t[..., top : top + h, left : left + w]
            if kind in ("image", "normal"):
                t = F.interpolate(crop[None], size=(height, width), mode="bilinear",
                                  align_corners=True)[0]  # fmt: skip
            elif kind == "label":
                t = F.interpolate(crop[None, None].float(), size=(height, width),
                                  mode="nearest")[0, 0].to(t.dtype)  # fmt: skip
            else:
                t = F.interpolate(crop[None], size=(height, width), mode="nearest")[0] / scale
        if flip:
            t = t.flip(-1)
            if kind == "normal":
                t = torch.cat((-t[:1], t[1:]), dim=0)
        out.append(t)
    return out


# ----------------------------------------------------------------------------------------
# the MTAN .npy layout
# ----------------------------------------------------------------------------------------

_INDEX_FILE = re.compile(r"^(0|[1-9][0-9]*)\.npy$")


@dataclass(frozen=True)
class Modality:
    """One folder of the layout: ``folder`` name and the ``kind`` of map it holds."""

    folder: str
    kind: Literal["image", "label", "depth", "normal"]

    def expected(self, size: tuple[int, int] | None = None) -> str:
        h, w = ("H", "W") if size is None else size
        return {
            "image": f"({h}, {w}, 3) floating RGB",
            "label": f"({h}, {w}) class labels (any integer dtype, or floats holding integers)",
            "depth": f"({h}, {w}, 1) floating",
            "normal": f"({h}, {w}, 3) floating unit normals",
        }[self.kind]

    def shape(self, size: tuple[int, int]) -> tuple[int, ...]:
        return {"image": (*size, 3), "label": size, "depth": (*size, 1), "normal": (*size, 3)}[
            self.kind
        ]


def _read_header(path: Path) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype of a ``.npy`` file from its header (the data is not read)."""
    try:
        with open(path, "rb") as fh:
            version = np.lib.format.read_magic(fh)
            if version == (1, 0):
                shape, _, dtype = np.lib.format.read_array_header_1_0(fh)
            elif version == (2, 0):
                shape, _, dtype = np.lib.format.read_array_header_2_0(fh)
            else:  # version 3.0 (utf-8 field names): load to check it
                arr = np.load(path, mmap_mode="r", allow_pickle=False)
                return tuple(arr.shape), arr.dtype
    except (OSError, ValueError, EOFError) as exc:
        raise DatasetError(f"{path}: not a readable .npy file ({exc})") from exc
    return tuple(int(n) for n in shape), np.dtype(dtype)


def _dtype_ok(m: Modality, dtype: np.dtype) -> bool:
    if m.kind == "label":
        return dtype.kind in "iuf"
    return dtype.kind == "f"


def _index_files(folder: Path, m: Modality) -> list[Path]:
    """The ``0.npy .. N-1.npy`` files of one modality folder, checked for gaps."""
    where = folder / m.folder
    if not where.is_dir():
        raise DatasetError(
            f"{where}: folder not found; expected {m.folder}/0.npy, 1.npy, ... holding "
            f"{m.expected()} arrays"
        )
    indices = []
    for entry in where.iterdir():
        if entry.suffix != ".npy":
            continue  # README, .DS_Store, ...: not data
        match = _INDEX_FILE.match(entry.name)
        if match is None:
            raise DatasetError(
                f"{entry}: unexpected file name; the files must be named 0.npy, 1.npy, ..."
            )
        indices.append(int(match.group(1)))
    if not indices:
        raise DatasetError(f"{where}: no .npy files; expected 0.npy, 1.npy, ...")
    indices.sort()
    for expected, got in enumerate(indices):
        if expected != got:
            raise DatasetError(
                f"{where}: files must be numbered 0.npy .. {len(indices) - 1}.npy without gaps; "
                f"{expected}.npy is missing"
            )
    return [where / f"{i}.npy" for i in indices]


def scan_folder(folder: Path, modalities: Sequence[Modality]) -> tuple[int, tuple[int, int]]:
    """Check one split folder's structure; return its item count and image size ``(H, W)``.

    Every modality folder must hold ``0.npy .. N-1.npy`` with the same ``N``, and every
    file's header must give the modality's shape at one common ``H x W`` and an accepted
    dtype. Raises :class:`DatasetError` naming the offending folder or file.
    """
    if not folder.is_dir():
        raise DatasetError(
            f"{folder}: split folder not found; expected "
            f"{folder}/{{{','.join(m.folder for m in modalities)}}}/<i>.npy"
        )
    files = {m.folder: _index_files(folder, m) for m in modalities}
    first = modalities[0]
    n = len(files[first.folder])
    for m in modalities[1:]:
        if len(files[m.folder]) != n:
            raise DatasetError(
                f"{folder}: {m.folder}/ holds {len(files[m.folder])} files but "
                f"{first.folder}/ holds {n}; every item needs one file per folder "
                f"({', '.join(m.folder for m in modalities)}) with the same index"
            )
    shape, _ = _read_header(files[first.folder][0])
    if len(shape) != 3 or shape[2] != 3:
        raise DatasetError(
            f"{files[first.folder][0]}: expected an array of shape {first.expected()}, "
            f"got {shape}"
        )
    size = (shape[0], shape[1])
    if min(size) < MIN_SIZE:
        raise DatasetError(
            f"{files[first.folder][0]}: images must be at least {MIN_SIZE}x{MIN_SIZE} "
            f"(SegNet pools five times), got {size[0]}x{size[1]}"
        )
    for m in modalities:
        want = m.shape(size)
        for path in files[m.folder]:
            got, dtype = _read_header(path)
            if got != want or not _dtype_ok(m, dtype):
                raise DatasetError(
                    f"{path}: expected an array of shape {m.expected(size)}, got shape "
                    f"{got} of dtype {dtype}"
                )
    return n, size


def _check_values(path: Path, m: Modality, arr: np.ndarray, num_classes: int) -> None:
    if m.kind != "label":
        if not np.isfinite(arr).all():
            raise DatasetError(f"{path}: {m.folder} holds NaN or infinite values")
        return
    if arr.dtype.kind == "f":
        bad = ~np.isfinite(arr) | (arr != np.round(arr))
        if bad.any():
            where = tuple(int(i) for i in np.argwhere(bad)[0])
            raise DatasetError(
                f"{path}: label {arr[where].item()!r} at pixel {where} is not an integer class"
            )
    bad = (arr != -1) & ((arr < 0) | (arr >= num_classes))
    if bad.any():
        where = tuple(int(i) for i in np.argwhere(bad)[0])
        value = arr[where].item()
        raise DatasetError(
            f"{path}: label {int(value)} at pixel {where} is outside [0, {num_classes}) and "
            "is not -1 (ignore)"
        )


@dataclass
class SceneSplit:
    """One split of a scene benchmark: the items ``indices`` of ``folder``, loaded lazily.

    Items are read from disk (and checked) when a batch needs them; with ``cache`` they
    are kept in memory after the first read. ``resolution`` resizes every item at load
    time (bilinear with antialiasing for images, nearest for the other maps).
    """

    folder: Path
    modalities: tuple[Modality, ...]
    indices: list[int]
    size: tuple[int, int]
    num_classes: int
    resolution: tuple[int, int] | None = None
    augment: bool = False
    cache: bool = False
    _items: dict[int, tuple[Tensor, ...]] = field(default_factory=dict, repr=False)

    def __len__(self) -> int:
        return len(self.indices)

    @property
    def kinds(self) -> list[str]:
        return [m.kind for m in self.modalities]

    def item(self, index: int) -> tuple[Tensor, ...]:
        """Item ``index`` (a file index) as channels-first tensors; labels int64."""
        cached = self._items.get(index)
        if cached is not None:
            return cached
        out = []
        for m in self.modalities:
            path = self.folder / m.folder / f"{index}.npy"
            try:
                arr = np.load(path, allow_pickle=False)
            except (OSError, ValueError, EOFError) as exc:
                raise DatasetError(f"{path}: not a readable .npy file ({exc})") from exc
            want = m.shape(self.size)
            if arr.shape != want or not _dtype_ok(m, arr.dtype):
                raise DatasetError(
                    f"{path}: expected an array of shape {m.expected(self.size)}, got shape "
                    f"{arr.shape} of dtype {arr.dtype}"
                )
            _check_values(path, m, arr, self.num_classes)
            if m.kind == "label":
                t = torch.from_numpy(arr.astype(np.int64))
            else:
                t = torch.from_numpy(np.ascontiguousarray(np.moveaxis(arr, -1, 0), np.float32))
            out.append(self._resize(t, m.kind))
        item = tuple(out)
        if self.cache:
            self._items[index] = item
        return item

    def _resize(self, t: Tensor, kind: str) -> Tensor:
        if self.resolution is None or tuple(t.shape[-2:]) == self.resolution:
            return t
        if kind == "image":
            return F.interpolate(t[None], size=self.resolution, mode="bilinear",
                                 align_corners=False, antialias=True)[0]  # fmt: skip
        if kind == "label":
            return F.interpolate(t[None, None].float(), size=self.resolution,
                                 mode="nearest")[0, 0].long()  # fmt: skip
        return F.interpolate(t[None], size=self.resolution, mode="nearest")[0]


# ----------------------------------------------------------------------------------------
# the benchmark base
# ----------------------------------------------------------------------------------------

_DATA_DEFAULTS: dict[str, Any] = {
    "root": None,
    "model": "mtan",
    "width_div": 1,
    "task_attention": "shared",
    "augment": True,
    "resolution": None,
    "max_train": None,
    "max_val": None,
    "val_size": None,
    "split_seed": 0,
    "metric_mode": "exact",
    "cache": False,
    "stl": None,
}


def _opt_int(name: str, value: Any, minimum: int) -> int | None:
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"data.{name} must be an int >= {minimum} or null, got {value!r}")
    return value


class SceneBenchmark(Benchmark):
    """A dense scene-understanding benchmark in MTAN's preprocessed ``.npy`` layout.

    ``{root}/{train,val}/{folder}/{i}.npy`` with one folder per entry of ``modalities``
    (the image first, then one per task in task order). Subclasses set the class
    attributes; the benchmark options (``config.data``) are:

    ``root``: the dataset folder. ``model``: ``"mtan"`` (SegNet-MTAN) or ``"segnet"``.
    ``width_div``: divide SegNet's channels (1 = the published model).
    ``task_attention``: MTAN's parameter split (``"shared"``/``"task"``, see
    :class:`SegNetMTAN`). ``augment``: random scale-crop and flip in training.
    ``resolution``: ``[H, W]`` to resize every item to at load time (``null``: as
    stored). ``max_train`` / ``max_val``: use only the first N items of the train / val
    folder. ``val_size``: ``null`` evaluates validation and test on the whole val folder
    (the references: they report on it); an int N splits the val folder once, by
    ``split_seed``, into N validation items and the rest as test. ``metric_mode``:
    ``"exact"`` (whole-set metrics) or ``"batch"`` (the references' per-batch means; use
    the references' ``eval_batch_size``). ``cache``: keep loaded items in memory.
    ``stl``: which published single-task row :meth:`val_score` compares with (a key
    of ``stl_baselines``).
    """

    modalities: tuple[Modality, ...]
    heads: tuple[tuple[HeadKind, int], ...]
    num_classes: int
    default_root: str
    stl_baselines: Mapping[str, tuple[float, ...]]

    def __init__(self) -> None:
        self._splits: dict[tuple[Any, ...], dict[str, SceneSplit]] = {}
        self._metric_mode: Literal["exact", "batch"] = "exact"
        self._stl: tuple[float, ...] = next(iter(self.stl_baselines.values()))

    # -- options -------------------------------------------------------------------------

    def options(self, config: TrainConfig) -> dict[str, Any]:
        """``config.data`` with defaults filled in, validated."""
        unknown = set(config.data) - set(_DATA_DEFAULTS)
        if unknown:
            raise ValueError(
                f"{self.name}: unknown data option(s) {sorted(unknown)}; options: "
                f"{', '.join(sorted(_DATA_DEFAULTS))}"
            )
        opts = {**_DATA_DEFAULTS, **config.data}
        if opts["root"] is None:
            opts["root"] = self.default_root
        if opts["stl"] is None:
            opts["stl"] = next(iter(self.stl_baselines))
        if opts["model"] not in ("mtan", "segnet"):
            raise ValueError(f"data.model must be 'mtan' or 'segnet', got {opts['model']!r}")
        if opts["task_attention"] not in ("shared", "task"):
            raise ValueError(
                f"data.task_attention must be 'shared' or 'task', got {opts['task_attention']!r}"
            )
        if opts["metric_mode"] not in ("exact", "batch"):
            raise ValueError(
                f"data.metric_mode must be 'exact' or 'batch', got {opts['metric_mode']!r}"
            )
        if opts["stl"] not in self.stl_baselines:
            raise ValueError(
                f"data.stl must be one of {sorted(self.stl_baselines)}, got {opts['stl']!r}"
            )
        for name in ("augment", "cache"):
            if not isinstance(opts[name], bool):
                raise TypeError(f"data.{name} must be true or false, got {opts[name]!r}")
        _filters(opts["width_div"])
        res = opts["resolution"]
        if res is not None:
            if (not isinstance(res, (list, tuple)) or len(res) != 2
                    or not all(isinstance(v, int) and not isinstance(v, bool) for v in res)
                    or min(res) < MIN_SIZE):  # fmt: skip
                raise ValueError(
                    f"data.resolution must be [H, W] with ints >= {MIN_SIZE}, or null; got {res!r}"
                )
            opts["resolution"] = (int(res[0]), int(res[1]))
        _opt_int("max_train", opts["max_train"], 1)
        _opt_int("max_val", opts["max_val"], 1)
        _opt_int("val_size", opts["val_size"], 1)
        _opt_int("split_seed", opts["split_seed"], 0)
        return opts

    # -- data ----------------------------------------------------------------------------

    def build_data(self, config: TrainConfig) -> dict[str, SceneSplit]:
        """``train`` (the train folder) and ``val``/``test`` (from the val folder).

        With ``val_size`` null, ``val`` and ``test`` are the same object (the whole val
        folder, the references' evaluation set); otherwise a fixed random split of it.
        """
        opts = self.options(config)
        self._metric_mode = opts["metric_mode"]
        self._stl = tuple(self.stl_baselines[opts["stl"]])
        root = Path(opts["root"]).expanduser()
        key = (str(root.resolve()), opts["resolution"], opts["max_train"], opts["max_val"],
               opts["val_size"], opts["split_seed"], opts["augment"], opts["cache"])  # fmt: skip
        if key in self._splits:
            return self._splits[key]
        if not root.is_dir():
            raise DatasetError(
                f"{root}: {self.name} dataset folder not found; expected "
                f"{root}/{{train,val}}/{{{','.join(m.folder for m in self.modalities)}}}/<i>.npy "
                f"(see docs/{self.name}.md; set data.root=...)"
            )
        n_train, train_size = scan_folder(root / "train", self.modalities)
        n_val, val_size = scan_folder(root / "val", self.modalities)

        def split(folder: str, indices: list[int], size: tuple[int, int], augment: bool) -> SceneSplit:
            return SceneSplit(root / folder, self.modalities, indices, size, self.num_classes,
                              opts["resolution"], augment, opts["cache"])  # fmt: skip

        train_idx = list(range(n_train))[: opts["max_train"]]
        val_idx = list(range(n_val))[: opts["max_val"]]
        splits = {"train": split("train", train_idx, train_size, opts["augment"])}
        if opts["val_size"] is None:
            splits["val"] = splits["test"] = split("val", val_idx, val_size, False)
        else:
            k = opts["val_size"]
            if k >= len(val_idx):
                raise ValueError(
                    f"data.val_size={k} leaves no test items: the val folder has "
                    f"{len(val_idx)} items in use"
                )
            gen = torch.Generator().manual_seed(opts["split_seed"])
            perm = torch.randperm(len(val_idx), generator=gen).tolist()
            splits["val"] = split("val", sorted(val_idx[i] for i in perm[:k]), val_size, False)
            splits["test"] = split("val", sorted(val_idx[i] for i in perm[k:]), val_size, False)
        self._splits.clear()  # one dataset in memory at a time
        self._splits[key] = splits
        return splits

    def num_batches(self, split: Any, batch_size: int) -> int:
        return -(-len(split) // batch_size)

    def batches(
        self, split: Any, batch_size: int, generator: torch.Generator | None, device: torch.device
    ) -> Iterator[Batch]:
        n = len(split)
        order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
        kinds = split.kinds
        augment = generator is not None and split.augment
        for start in range(0, n, batch_size):
            items = [split.item(split.indices[int(i)]) for i in order[start : start + batch_size]]
            if augment:
                assert generator is not None
                items = [tuple(augment_sample(t, kinds, generator)) for t in items]
            yield tuple(torch.stack(parts).to(device, non_blocking=True) for parts in zip(*items))

    # -- model, losses, metrics ----------------------------------------------------------

    def build_model(self, config: TrainConfig) -> MultiTaskModel:
        opts = self.options(config)
        if opts["model"] == "segnet":
            return SegNet(self.heads, width_div=opts["width_div"])
        return SegNetMTAN(self.heads, width_div=opts["width_div"],
                          task_attention=opts["task_attention"])  # fmt: skip

    def inputs(self, batch: Batch) -> Tensor:
        image: Tensor = batch[0]
        return image

    def losses(self, outputs: Sequence[Tensor], batch: Batch) -> Tensor:
        return torch.stack(
            [_LOSSES[kind](out, target)
             for (kind, _), out, target in zip(self.heads, outputs, batch[1:])]
        )  # fmt: skip

    def new_metrics(self) -> list[TaskMetric]:
        metrics: list[TaskMetric] = []
        for kind, _ in self.heads:
            if kind == "segmentation":
                metrics.append(Segmentation(self.num_classes, ignore_index=-1))
            elif kind == "depth":
                metrics.append(Depth(mode=self._metric_mode))
            else:
                metrics.append(Normal(mode=self._metric_mode))
        return metrics

    def update_metrics(
        self, metrics: Sequence[TaskMetric], outputs: Sequence[Tensor], batch: Batch
    ) -> None:
        for metric, out, target in zip(metrics, outputs, batch[1:]):
            metric.update(out, target)

    def val_score(self, val: Mapping[str, float]) -> float:
        """``-Delta m%`` of the validation metrics against the published STL row (``data.stl``)."""
        columns = self.metric_columns()
        values = [val[f"{task}/{spec.name}"] for task, spec in columns]
        if not all(math.isfinite(v) for v in values):
            return -math.inf
        return -delta_m(values, self._stl, [spec.higher_is_better for _, spec in columns])


def task_specs(heads: Sequence[tuple[str, int]]) -> tuple[TaskSpec, ...]:
    """The :class:`TaskSpec` of each head kind, with the metrics of :mod:`fairmtl.metrics`."""
    specs = {"segmentation": Segmentation.specs, "depth": Depth.specs, "normal": Normal.specs}
    return tuple(TaskSpec(kind, specs[kind]) for kind, _ in heads)
