"""CelebA: 40 binary face attributes as 40 tasks (FairGrad, Ban & Ji 2024, Table 1).

The setup is the one FairGrad takes from FAMO (Liu et al., 2023) for CelebA (Liu et al.,
"Deep Learning Face Attributes in the Wild", ICCV 2015), as written in the project's
benchmark spec:

* Data: the aligned images ``Img/img_align_celeba/*.jpg`` (178x218 JPEG), the official
  split ``Eval/list_eval_partition.txt`` (``<image> <0|1|2>`` = train/val/test: 162,770 /
  19,867 / 19,962 images) and the labels ``Anno/list_attr_celeba.txt`` (line 1: the image
  count; line 2: the 40 attribute names; then ``<image>`` and 40 values ``1``/``-1``,
  read as 1/0).
* Input: the image resized to 64x64 with Pillow's bilinear filter and scaled to floats
  in [0, 1], channels first (torchvision's ``Resize((64, 64))`` then ``ToTensor()``; on a
  PIL image torchvision's ``Resize`` calls ``Image.resize`` with ``BILINEAR``, which in
  Pillow is antialiased when it shrinks, so the pixels are the same). No normalisation,
  no augmentation.
* Model: a 9-layer CNN shared by all tasks, conv3x3-64, max-pool, conv128, conv128,
  max-pool, conv256, conv256, max-pool, conv512, conv512, adaptive average pool, FC512,
  FC512, each layer followed by BatchNorm and ReLU (convolutions with padding 1; the
  convolutions and the two fully connected layers have no bias, which BatchNorm makes
  redundant, as in FAMO's code), and one head per attribute, ``Linear(512, 1)`` then a
  sigmoid, trained with binary cross-entropy.
* Training: Adam, lr 3e-4, 15 epochs, batch 256.
* Metric: per-attribute F1 at threshold 0.5 over the whole split
  (:class:`fairmtl.metrics.BinaryF1`); the test F1 reported is that of the epoch with the
  best mean validation F1 (``select="best"`` with the default :meth:`Benchmark.val_score`).

JPEG decoding needs Pillow (``pip install 'fairmtl[celeba]'``); torchvision is not used.
Decoding 162,770 JPEGs per epoch is the bottleneck on a GPU, so the images are read by a
:class:`torch.utils.data.DataLoader` with ``data.workers`` worker processes, or decoded
once into an in-memory uint8 cache (``data.cache=true``: 12 KiB per 64x64 image, about
2.5 GB for all 202,599 images). The order of the training batches is drawn from the
runner's generator in the main process, so a resumed run sees the same batches.

Configurations: ``paper`` (the published hyperparameters on the whole dataset) and
``cpu`` (reduced: the first 1,024 / 256 / 256 images of the official train / val / test
splits, resized to 32x32, 3 epochs of batch 64, images cached; see ``docs/celeba.md``).

:func:`write_fixture` writes a tiny dataset in the real on-disk layout, to try the
pipeline without the real data.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fairmtl.bench.base import (
    Batch,
    Benchmark,
    DatasetError,
    MultiTaskModel,
    TaskSpec,
    TrainConfig,
    require,
)
from fairmtl.bench.published import CELEBA_ATTRIBUTES
from fairmtl.metrics import BinaryF1, MetricSpec, TaskMetric

__all__ = [
    "ATTRIBUTE_FILE",
    "BENCHMARK",
    "IMAGE_DIR",
    "IMAGE_SIZE",
    "PARTITION_FILE",
    "CelebA",
    "CelebAImages",
    "CelebANet",
    "CelebASplit",
    "decode_all",
    "load_image",
    "load_index",
    "read_attributes",
    "read_partition",
    "write_fixture",
]

PARTITION_FILE = Path("Eval") / "list_eval_partition.txt"
"""The official split, relative to the data root."""
ATTRIBUTE_FILE = Path("Anno") / "list_attr_celeba.txt"
"""The 40 attribute labels, relative to the data root."""
IMAGE_DIR = Path("Img") / "img_align_celeba"
"""The aligned JPEG images, relative to the data root."""
IMAGE_SIZE = (178, 218)
"""(width, height) of every aligned CelebA image."""

SPLITS = ("train", "val", "test")
_SPLIT_CODES = {"0": "train", "1": "val", "2": "test"}
_VALUES = {"1": 1, "-1": 0}
_LAYOUT = f"{PARTITION_FILE}, {ATTRIBUTE_FILE} and {IMAGE_DIR}/ (see docs/celeba.md)"


# ----------------------------------------------------------------------------------------
# the annotation files
# ----------------------------------------------------------------------------------------


def _read_lines(path: Path) -> list[str]:
    if not path.is_file():
        raise DatasetError(f"{path} is missing; a CelebA root holds {_LAYOUT}")
    try:
        return path.read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path} cannot be read as text: {exc}") from exc


def read_partition(path: Path) -> dict[str, list[str]]:
    """The official split: ``{"train": [image, ...], "val": [...], "test": [...]}`` in file order.

    Each non-empty line must be ``<image> <0|1|2>``; every split must be non-empty and no
    image may be listed twice. Anything else is a :class:`DatasetError` naming the line.
    """
    path = Path(path)
    out: dict[str, list[str]] = {s: [] for s in SPLITS}
    seen: set[str] = set()
    for number, line in enumerate(_read_lines(path), start=1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 2:
            raise DatasetError(
                f"{path}, line {number}: expected '<image> <0|1|2>', got {line.strip()!r}"
            )
        name, code = parts
        split = _SPLIT_CODES.get(code)
        if split is None:
            raise DatasetError(
                f"{path}, line {number}: partition label {code!r} of {name} is not 0, 1 or 2 "
                "(train, val, test)"
            )
        if name in seen:
            raise DatasetError(f"{path}, line {number}: image {name} is listed twice")
        seen.add(name)
        out[split].append(name)
    for split in SPLITS:
        if not out[split]:
            raise DatasetError(f"{path}: no image is in the {split} split")
    return out


def read_attributes(path: Path) -> tuple[dict[str, int], Tensor]:
    """The attribute file: ``({image: row}, labels)`` with ``labels`` uint8 (N, 40) in {0, 1}.

    Line 1 is the image count, line 2 the 40 attribute names (they must be
    :data:`fairmtl.bench.published.CELEBA_ATTRIBUTES`, in that order), then one line per
    image: its file name and 40 values ``1`` or ``-1`` (``-1`` becomes 0). Anything else
    is a :class:`DatasetError` naming the line.
    """
    path = Path(path)
    lines = _read_lines(path)
    if len(lines) < 2:
        raise DatasetError(
            f"{path}: expected a count line and a line of the 40 attribute names, "
            f"got {len(lines)} line(s)"
        )
    try:
        count = int(lines[0].strip())
    except ValueError:
        raise DatasetError(
            f"{path}, line 1: expected the number of images, got {lines[0].strip()!r}"
        ) from None
    names = tuple(lines[1].split())
    if names != CELEBA_ATTRIBUTES:
        if len(names) != len(CELEBA_ATTRIBUTES):
            detail = f"{len(names)} names"
        else:
            i = next(i for i, (a, b) in enumerate(zip(names, CELEBA_ATTRIBUTES)) if a != b)
            detail = f"name {i + 1} is {names[i]!r}, expected {CELEBA_ATTRIBUTES[i]!r}"
        raise DatasetError(
            f"{path}, line 2: expected the 40 CelebA attribute names "
            f"({CELEBA_ATTRIBUTES[0]} ... {CELEBA_ATTRIBUTES[-1]}), got {detail}"
        )
    k = len(CELEBA_ATTRIBUTES)
    rows: dict[str, int] = {}
    values = bytearray()
    for number, line in enumerate(lines[2:], start=3):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != k + 1:
            raise DatasetError(
                f"{path}, line {number}: expected an image name and {k} values, "
                f"got {len(parts)} fields"
            )
        try:
            values.extend([_VALUES[v] for v in parts[1:]])
        except KeyError:
            j = next(j for j, v in enumerate(parts[1:]) if v not in _VALUES)
            raise DatasetError(
                f"{path}, line {number}: value {parts[j + 1]!r} of {CELEBA_ATTRIBUTES[j]} "
                f"for {parts[0]} is not 1 or -1"
            ) from None
        if parts[0] in rows:
            raise DatasetError(f"{path}, line {number}: image {parts[0]} is listed twice")
        rows[parts[0]] = len(rows)
    if len(rows) != count:
        raise DatasetError(f"{path}: line 1 announces {count} images, the file lists {len(rows)}")
    labels = (
        torch.frombuffer(values, dtype=torch.uint8) if values else torch.zeros(0, dtype=torch.uint8)
    )
    return rows, labels.reshape(len(rows), k).clone()


def load_index(
    root: str | Path, limits: Mapping[str, int | None] | None = None
) -> dict[str, tuple[list[Path], Tensor]]:
    """Image paths and labels per split: ``{split: ([path, ...], labels uint8 (N, 40))}``.

    Reads and checks both annotation files, checks that every partitioned image has labels
    and is in the image folder (one directory listing), then keeps the first
    ``limits[split]`` images of each split in file order (``None``: all of them).
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"CelebA root {root} is not a folder; it must hold {_LAYOUT}")
    partition = read_partition(root / PARTITION_FILE)
    rows, labels = read_attributes(root / ATTRIBUTE_FILE)
    image_dir = root / IMAGE_DIR
    if not image_dir.is_dir():
        raise DatasetError(f"image folder {image_dir} is missing; a CelebA root holds {_LAYOUT}")
    try:
        present = set(os.listdir(image_dir))
    except OSError as exc:
        raise DatasetError(f"image folder {image_dir} cannot be listed: {exc}") from exc
    limits = limits or {}
    out: dict[str, tuple[list[Path], Tensor]] = {}
    for split in SPLITS:
        names = partition[split]
        unlabelled = [n for n in names if n not in rows]
        if unlabelled:
            raise DatasetError(
                f"{root / ATTRIBUTE_FILE} has no labels for {unlabelled[0]}, which "
                f"{root / PARTITION_FILE} puts in the {split} split "
                f"({len(unlabelled)} such image(s))"
            )
        missing = [n for n in names if n not in present]
        if missing:
            raise DatasetError(
                f"image {image_dir / missing[0]} is missing: {root / PARTITION_FILE} lists it "
                f"in the {split} split ({len(missing)} image(s) of that split are missing)"
            )
        limit = limits.get(split)
        if limit is not None:
            names = names[:limit]
        index = torch.tensor([rows[n] for n in names], dtype=torch.long)
        out[split] = ([image_dir / n for n in names], labels[index])
    return out


# ----------------------------------------------------------------------------------------
# images
# ----------------------------------------------------------------------------------------


def load_image(path: str | Path, size: int = 64) -> Tensor:
    """One aligned CelebA JPEG as uint8 ``(3, size, size)``: RGB, bilinear (antialiased) resize.

    Raises :class:`DatasetError` naming the file when it is missing, cannot be decoded or
    is not a 178x218 aligned image.
    """
    image_mod = require("PIL.Image", "celeba")
    path = Path(path)
    try:
        with image_mod.open(path) as img:
            if img.size != IMAGE_SIZE:
                raise DatasetError(
                    f"image {path} is {img.size[0]}x{img.size[1]}; expected an aligned CelebA "
                    f"image of {IMAGE_SIZE[0]}x{IMAGE_SIZE[1]} (width x height)"
                )
            rgb = img.convert("RGB")
    except FileNotFoundError:
        raise DatasetError(f"image {path} is missing") from None
    except DatasetError:
        raise
    except (OSError, ValueError, SyntaxError) as exc:  # PIL's errors for broken files
        raise DatasetError(f"image {path} cannot be decoded as a JPEG image: {exc}") from exc
    bilinear = getattr(image_mod, "Resampling", image_mod).BILINEAR
    small = rgb.resize((size, size), bilinear)
    array = np.asarray(small, dtype=np.uint8)
    return torch.from_numpy(array.copy()).permute(2, 0, 1).contiguous()


class CelebAImages(torch.utils.data.Dataset[tuple[Tensor, Tensor]]):
    """Map-style dataset of one split: item ``i`` is ``(image uint8 (3, S, S), labels uint8 (40,))``."""

    def __init__(self, files: Sequence[Path], labels: Tensor, size: int) -> None:
        self.files = [str(f) for f in files]
        self.labels = labels
        self.size = size

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        return load_image(self.files[index], self.size), self.labels[index]


@dataclass
class CelebASplit:
    """One split as :meth:`CelebA.batches` takes it.

    ``images`` is the decoded uint8 cache ``(N, 3, S, S)`` when ``data.cache`` is on
    (``None``: decode from ``files`` with ``workers`` DataLoader processes).
    """

    name: str
    files: list[Path]
    labels: Tensor
    size: int
    workers: int
    images: Tensor | None = None

    def __len__(self) -> int:
        return len(self.files)


def _index_batches(order: Tensor, batch_size: int) -> list[list[int]]:
    """Consecutive batches of ``order``; a trailing batch of one sample joins the one before
    (BatchNorm cannot train on a single sample)."""
    idx = order.tolist()
    out = [idx[i : i + batch_size] for i in range(0, len(idx), batch_size)]
    if len(out) > 1 and len(out[-1]) == 1:
        out[-2].extend(out.pop())
    return out


class _CheckedImages(CelebAImages):
    """A :class:`CelebAImages` that returns a :class:`DatasetError`'s message instead of
    raising it, so that a DataLoader worker's error reaches the user as one clear line."""

    def __getitem__(self, index: int) -> Any:
        try:
            return super().__getitem__(index)
        except DatasetError as exc:
            return str(exc)


def _collate(items: list[Any]) -> tuple[Tensor, Tensor] | str:
    for item in items:
        if isinstance(item, str):
            return item
    return torch.stack([x for x, _ in items]), torch.stack([y for _, y in items])


def _read_batches(
    split: CelebASplit, batches: list[list[int]], pin: bool
) -> Iterator[tuple[Tensor, Tensor]]:
    """Decode the images of ``batches`` (lists of indices) with ``split.workers`` processes."""
    loader = torch.utils.data.DataLoader(
        _CheckedImages(split.files, split.labels, split.size),
        batch_sampler=batches,
        num_workers=split.workers,
        collate_fn=_collate,
        pin_memory=pin,
        # The loader draws a seed for its workers; its own generator keeps that draw off
        # torch's global random state (which methods and checkpoints rely on).
        generator=torch.Generator().manual_seed(0),
    )
    for batch in loader:
        if isinstance(batch, str):
            raise DatasetError(batch)
        yield batch


def decode_all(split: CelebASplit, batch_size: int = 256) -> Tensor:
    """Every image of ``split`` decoded in order, as uint8 ``(N, 3, S, S)``."""
    n = len(split)
    images = torch.empty(n, 3, split.size, split.size, dtype=torch.uint8)
    start = 0
    for x, _ in _read_batches(split, _index_batches(torch.arange(n), batch_size), pin=False):
        images[start : start + x.shape[0]] = x
        start += x.shape[0]
    return images


# ----------------------------------------------------------------------------------------
# the model
# ----------------------------------------------------------------------------------------


def _conv(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]


def _fc(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Linear(cin, cout, bias=False), nn.BatchNorm1d(cout), nn.ReLU()]


class CelebANet(MultiTaskModel):
    """FAMO's CelebA network (used by FairGrad): a 9-layer CNN encoder and one sigmoid
    ``Linear(512, 1)`` head per attribute; each head outputs probabilities ``(B, 1)``."""

    def __init__(self, num_tasks: int = len(CELEBA_ATTRIBUTES)) -> None:
        encoder = nn.Sequential(
            *_conv(3, 64), nn.MaxPool2d(2, 2),
            *_conv(64, 128), *_conv(128, 128), nn.MaxPool2d(2, 2),
            *_conv(128, 256), *_conv(256, 256), nn.MaxPool2d(2, 2),
            *_conv(256, 512), *_conv(512, 512),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
            *_fc(512, 512), *_fc(512, 512),
        )  # fmt: skip
        heads = [nn.Sequential(nn.Linear(512, 1), nn.Sigmoid()) for _ in range(num_tasks)]
        super().__init__(encoder, heads)


# ----------------------------------------------------------------------------------------
# the benchmark
# ----------------------------------------------------------------------------------------


def _limit(data: Mapping[str, Any], key: str) -> int | None:
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"data.{key} must be a positive int or null (all images), got {value!r}")
    return value


def _options(data: Mapping[str, Any]) -> dict[str, Any]:
    """The benchmark's data options, checked."""
    root = data.get("root", "data/celeba")
    if not isinstance(root, (str, os.PathLike)):
        raise TypeError(f"data.root must be a folder path, got {root!r}")
    size = data.get("size", 64)
    if not isinstance(size, int) or isinstance(size, bool) or size < 8:
        raise ValueError(f"data.size must be an int >= 8 (the image side in pixels), got {size!r}")
    workers = data.get("workers", 0)
    if not isinstance(workers, int) or isinstance(workers, bool) or workers < 0:
        raise ValueError(
            f"data.workers must be an int >= 0 (DataLoader processes), got {workers!r}"
        )
    cache = data.get("cache", False)
    if not isinstance(cache, bool):
        raise TypeError(f"data.cache must be true or false, got {cache!r}")
    limits = {s: _limit(data, f"max_{s}") for s in SPLITS}
    return {"root": Path(root), "size": size, "workers": workers, "cache": cache, "limits": limits}


class CelebA(Benchmark):
    """CelebA, 40 attribute-classification tasks (FairGrad, Ban & Ji 2024, Table 1)."""

    name = "celeba"
    tasks = tuple(TaskSpec(a, (MetricSpec("f1", True),)) for a in CELEBA_ATTRIBUTES)
    configs: Mapping[str, TrainConfig] = {
        # FairGrad Sec. 5.1 / FAMO: Adam 3e-4, 15 epochs, batch 256, test F1 at the best
        # mean validation F1. data.workers and data.cache change the speed only.
        "paper": TrainConfig(
            epochs=15, batch_size=256, lr=3e-4, select="best", eval_batch_size=256,
            data={"root": "data/celeba", "size": 64, "workers": 4, "cache": False,
                  "max_train": None, "max_val": None, "max_test": None},
        ),
        # Reduced for 2 CPU cores: the first 1024/256/256 images of the official splits
        # at 32x32, 3 epochs of batch 64, decoded once into memory. Same model.
        "cpu": TrainConfig(
            epochs=3, batch_size=64, lr=3e-4, select="best", eval_batch_size=256,
            data={"root": "data/celeba", "size": 32, "workers": 0, "cache": True,
                  "max_train": 1024, "max_val": 256, "max_test": 256},
        ),
    }  # fmt: skip
    default_methods = (
        "ls", "si", "rlw", "dwa", "uw", "mgda", "pcgrad", "cagrad", "imtl-g", "nash-mtl",
        "famo", "fairgrad:alpha=2",
    )  # fmt: skip

    def __init__(self) -> None:
        self._cache: dict[tuple[Any, ...], dict[str, CelebASplit]] = {}

    def build_data(self, config: TrainConfig) -> dict[str, CelebASplit]:
        opts = _options(config.data)
        root: Path = opts["root"]
        if opts["cache"]:  # a suite trains many methods on the same decoded images
            stamps = tuple(_mtime(root / f) for f in (PARTITION_FILE, ATTRIBUTE_FILE))
            key = (str(root.resolve()), stamps, opts["size"], *opts["limits"].values())
            if key not in self._cache:
                self._cache.clear()
                splits = self._load(opts)
                for split in splits.values():
                    split.images = decode_all(split)
                self._cache[key] = splits
            for split in self._cache[key].values():
                split.workers = opts["workers"]
            return self._cache[key]
        return self._load(opts)

    @staticmethod
    def _load(opts: Mapping[str, Any]) -> dict[str, CelebASplit]:
        index = load_index(opts["root"], opts["limits"])
        return {
            split: CelebASplit(split, files, labels, opts["size"], opts["workers"])
            for split, (files, labels) in index.items()
        }

    def num_batches(self, split: Any, batch_size: int) -> int:
        n = len(split)
        full, rest = divmod(n, batch_size)
        return full + (1 if rest > 1 or (rest == 1 and full == 0) else 0)

    def batches(
        self, split: Any, batch_size: int, generator: torch.Generator | None, device: torch.device
    ) -> Iterator[Batch]:
        n = len(split)
        order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
        index = _index_batches(order, batch_size)
        if split.images is not None:
            for idx in index:
                rows = torch.tensor(idx, dtype=torch.long)
                yield _to_device(split.images[rows], split.labels[rows], device)
        else:
            for x, y in _read_batches(split, index, pin=device.type == "cuda"):
                yield _to_device(x, y, device)

    def build_model(self, config: TrainConfig) -> CelebANet:
        return CelebANet(self.num_tasks)

    def inputs(self, batch: Batch) -> Tensor:
        return batch[0]

    def losses(self, outputs: Sequence[Tensor], batch: Batch) -> Tensor:
        """Binary cross-entropy of each attribute, averaged over the batch: shape (40,)."""
        prob = torch.cat(list(outputs), dim=1)
        return F.binary_cross_entropy(prob, batch[1], reduction="none").mean(dim=0)

    def new_metrics(self) -> list[TaskMetric]:
        return [BinaryF1(threshold=0.5) for _ in self.tasks]

    def update_metrics(
        self, metrics: Sequence[TaskMetric], outputs: Sequence[Tensor], batch: Batch
    ) -> None:
        target = batch[1]
        for k, (metric, out) in enumerate(zip(metrics, outputs)):
            metric.update(out, target[:, k])


def _mtime(path: Path) -> int:
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return -1


def _to_device(x: Tensor, y: Tensor, device: torch.device) -> Batch:
    """uint8 images -> float in [0, 1] (as ``ToTensor``); uint8 labels -> float 0/1."""
    images = x.to(device, non_blocking=True).float().div_(255.0)
    return images, y.to(device, non_blocking=True).float()


# ----------------------------------------------------------------------------------------
# a tiny dataset in the real layout
# ----------------------------------------------------------------------------------------


def write_fixture(root: str | Path, n_images: int = 12, seed: int = 0) -> Path:
    """Write a tiny CelebA in the real on-disk layout under ``root``; return ``root``.

    ``n_images`` (>= 6) random 178x218 RGB JPEGs named ``000001.jpg``, ... in
    ``Img/img_align_celeba/``; ``Eval/list_eval_partition.txt`` with the train, val and
    test images in consecutive blocks (at least two in each split, as in the real file
    where the splits follow each other); ``Anno/list_attr_celeba.txt`` with the count
    line, the 40 real attribute names and ``1``/``-1`` values laid out as in the real
    file (each value right-aligned in two characters after one space). Every attribute
    takes both values within every split. Needs Pillow.
    """
    image_mod = require("PIL.Image", "celeba")
    if not isinstance(n_images, int) or isinstance(n_images, bool) or n_images < 6:
        raise ValueError(f"n_images must be an int >= 6 (two per split at least), got {n_images!r}")
    root = Path(root)
    image_dir = root / IMAGE_DIR
    image_dir.mkdir(parents=True, exist_ok=True)
    (root / PARTITION_FILE).parent.mkdir(parents=True, exist_ok=True)
    (root / ATTRIBUTE_FILE).parent.mkdir(parents=True, exist_ok=True)

    rng = np.random.default_rng(seed)
    names = [f"{i + 1:06d}.jpg" for i in range(n_images)]
    width, height = IMAGE_SIZE
    ramp = np.linspace(0, 1, height)[:, None, None] * np.linspace(0, 1, width)[None, :, None]
    for name in names:
        colour = rng.uniform(0, 255, size=3)
        noise = rng.normal(0, 30, size=(height, width, 3))
        pixels = np.clip(colour * (0.5 + ramp) + noise, 0, 255).astype(np.uint8)
        image_mod.fromarray(pixels, mode="RGB").save(image_dir / name, format="JPEG", quality=95)

    n_eval = max(2, n_images // 6)
    codes = [0] * (n_images - 2 * n_eval) + [1] * n_eval + [2] * n_eval
    partition = "".join(f"{name} {code}\n" for name, code in zip(names, codes))
    (root / PARTITION_FILE).write_text(partition, encoding="utf-8")

    k = len(CELEBA_ATTRIBUTES)
    lines = [f"{n_images}", " ".join(CELEBA_ATTRIBUTES)]
    for i, name in enumerate(names):
        # alternate along images (shifted by attribute): both values in any two neighbours
        values = [1 if (i + j) % 2 == 0 else -1 for j in range(k)]
        lines.append(name + "".join(f" {v:2d}" for v in values))
    (root / ATTRIBUTE_FILE).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


BENCHMARK = CelebA()
