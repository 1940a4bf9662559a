"""What a benchmark is: data + model + losses + metrics + named configurations.

A :class:`Benchmark` subclass describes one benchmark (MultiMNIST, NYUv2, ...); the
runner (:mod:`fairmtl.bench.runner`) trains any of them with any method. Benchmarks are
found by name through :func:`get_benchmark`, which imports the benchmark's module only
when it is asked for, so optional dependencies (mlxtend, torch-geometric, metaworld) are
imported where used.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from fairmtl.metrics import MetricSpec, TaskMetric

Batch = tuple[Any, ...]
"""One batch: ``(inputs, target_0, ..., target_{K-1})`` or another benchmark-defined tuple."""


class DatasetError(ValueError):
    """A dataset is missing or malformed; the message names the file and what was expected."""


class MissingExtraError(ImportError):
    """An optional dependency is not installed; the message names the pip extra to install."""


def require(module: str, extra: str) -> Any:
    """Import ``module`` or raise :class:`MissingExtraError` naming ``pip install 'fairmtl[extra]'``."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingExtraError(
            f"{module} is needed here but not installed: pip install 'fairmtl[{extra}]'"
        ) from exc


@dataclass(frozen=True)
class TaskSpec:
    """One task: its name and the metrics it is evaluated with."""

    name: str
    metrics: tuple[MetricSpec, ...]


@dataclass(frozen=True)
class TrainConfig:
    """A named training configuration ("paper", "cpu", ...).

    Attributes:
        epochs: training epochs.
        batch_size: training batch size.
        lr: learning rate of the model's optimizer.
        optimizer: ``"adam"`` or ``"sgd"`` (with ``momentum``).
        weight_decay: the optimizer's weight decay.
        momentum: SGD momentum.
        schedule: ``None``; ``{"type": "step", "step_size": 100, "gamma": 0.5}``;
            ``{"type": "plateau", "factor": 0.7, "patience": 5, "min_lr": 1e-5}`` (steps on
            the validation score); or ``{"type": "cosine"}`` over ``epochs``.
        clip_grad_norm: clip the total gradient norm to this value (``None``: no clipping).
        select: ``"last"`` (report the last epoch) or ``"best"`` (the epoch of the best
            validation score, :meth:`Benchmark.val_score`).
        eval_batch_size: batch size for evaluation.
        threads: ``torch.set_num_threads`` for the run (``None``: leave torch's default).
        features: per-task gradients w.r.t. the shared representation (features mode,
            MGDA-UB's approximation) for every method; methods defined that way always use it.
        data: benchmark-specific options (subset sizes, resolution, root folder, ...).
    """

    epochs: int
    batch_size: int
    lr: float
    optimizer: str = "adam"
    weight_decay: float = 0.0
    momentum: float = 0.9
    schedule: Mapping[str, Any] | None = None
    clip_grad_norm: float | None = None
    select: str = "last"
    eval_batch_size: int = 256
    threads: int | None = None
    features: bool = False
    data: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "eval_batch_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"config {name} must be a positive int, got {value!r}")
        if not isinstance(self.lr, (int, float)) or not self.lr > 0:
            raise ValueError(f"config lr must be a positive number, got {self.lr!r}")
        if self.optimizer not in ("adam", "sgd"):
            raise ValueError(f"config optimizer must be 'adam' or 'sgd', got {self.optimizer!r}")
        if self.select not in ("last", "best"):
            raise ValueError(f"config select must be 'last' or 'best', got {self.select!r}")
        if self.clip_grad_norm is not None and not self.clip_grad_norm > 0:
            raise ValueError(f"config clip_grad_norm must be > 0, got {self.clip_grad_norm!r}")
        if self.schedule is not None and self.schedule.get("type") not in ("step", "plateau", "cosine"):
            raise ValueError(
                f"config schedule type must be 'step', 'plateau' or 'cosine', got {self.schedule!r}"
            )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able copy (what the results store records)."""
        out = dataclasses.asdict(self)
        out["schedule"] = None if self.schedule is None else dict(self.schedule)
        out["data"] = dict(self.data)
        return out

    def with_overrides(self, overrides: Mapping[str, Any]) -> TrainConfig:
        """A copy with fields replaced; ``data.KEY`` replaces one benchmark-specific option."""
        fields = {f.name for f in dataclasses.fields(self)}
        top: dict[str, Any] = {}
        data = dict(self.data)
        for key, value in overrides.items():
            if key.startswith("data."):
                data[key[5:]] = value
            elif key in fields and key != "data":
                top[key] = value
            else:
                raise ValueError(
                    f"unknown config option {key!r}; options: {', '.join(sorted(fields - {'data'}))}, "
                    "or data.NAME for a benchmark option"
                )
        return dataclasses.replace(self, data=data, **top)


def parse_value(text: str) -> Any:
    """A command-line value: JSON when it parses (numbers, true/false, null, objects), else the string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


class MultiTaskModel(nn.Module):
    """A hard-parameter-sharing model: ``encoder`` (shared) and one head per task.

    Subclasses with another structure (MTAN's task attention inside the encoder)
    override :meth:`shared_parameters`, :meth:`task_parameters` and :meth:`forward`.
    ``represent``/``decode`` split the forward pass at the shared representation for
    features mode (MGDA-UB).
    """

    def __init__(self, encoder: nn.Module, heads: Sequence[nn.Module]) -> None:
        super().__init__()
        self.encoder = encoder
        self.heads = nn.ModuleList(heads)

    def represent(self, x: Tensor) -> Tensor:
        return self.encoder(x)

    def decode(self, z: Tensor) -> list[Tensor]:
        return [head(z) for head in self.heads]

    def forward(self, x: Tensor) -> list[Tensor]:
        return self.decode(self.represent(x))

    def shared_parameters(self) -> list[Tensor]:
        return list(self.encoder.parameters())

    def task_parameters(self, task: int | None = None) -> list[Tensor]:
        """Every head's parameters, or only those of head ``task``."""
        if task is not None:
            return list(self.heads[task].parameters())
        return list(self.heads.parameters())

    def last_shared_layer(self) -> nn.Module:
        """The last shared module with parameters (GradNorm's ``layer``)."""
        last = None
        for module in self.encoder.modules():
            if any(True for _ in module.parameters(recurse=False)):
                last = module
        if last is None:
            raise ValueError("the encoder has no parameters")
        return last


class Benchmark(ABC):
    """One benchmark. Subclasses set ``name``, ``tasks``, ``configs`` and implement the rest."""

    name: str
    tasks: tuple[TaskSpec, ...]
    configs: Mapping[str, TrainConfig]
    default_methods: tuple[str, ...] = ()
    """The methods ``fairmtl suite`` trains when none are named."""

    @property
    def num_tasks(self) -> int:
        return len(self.tasks)

    def config(self, name: str) -> TrainConfig:
        if name not in self.configs:
            raise KeyError(
                f"benchmark {self.name!r} has no configuration {name!r}; "
                f"configurations: {', '.join(self.configs)}"
            )
        return self.configs[name]

    def metric_columns(self) -> list[tuple[str, MetricSpec]]:
        """``(task name, metric)`` for every metric of every task, in table order."""
        return [(task.name, spec) for task in self.tasks for spec in task.metrics]

    @abstractmethod
    def build_data(self, config: TrainConfig) -> Mapping[str, Any]:
        """The splits ``{"train": ..., "val": ..., "test": ...}`` (any objects :meth:`batches` takes).

        The data must not depend on the run's seed (every run sees the same sets);
        raise :class:`DatasetError` naming the file when it is missing or malformed.
        """

    @abstractmethod
    def batches(
        self, split: Any, batch_size: int, generator: torch.Generator | None, device: torch.device
    ) -> Iterator[Batch]:
        """Batches of a split, shuffled by ``generator`` (``None``: in order), on ``device``."""

    @abstractmethod
    def num_batches(self, split: Any, batch_size: int) -> int:
        """How many batches :meth:`batches` yields (for the progress bar)."""

    @abstractmethod
    def build_model(self, config: TrainConfig) -> MultiTaskModel:
        """A freshly initialised model (from the current global torch seed)."""

    @abstractmethod
    def inputs(self, batch: Batch) -> Any:
        """The model's input in a batch."""

    @abstractmethod
    def losses(self, outputs: Sequence[Tensor], batch: Batch) -> Tensor:
        """The (K,) task losses of a batch."""

    @abstractmethod
    def new_metrics(self) -> list[TaskMetric]:
        """Fresh metric accumulators, one per task (``specs`` matching ``tasks[k].metrics``)."""

    @abstractmethod
    def update_metrics(
        self, metrics: Sequence[TaskMetric], outputs: Sequence[Tensor], batch: Batch
    ) -> None:
        """Accumulate one evaluation batch into every task's metric."""

    def shard(self, batch: Batch, rank: int, world: int) -> Batch:
        """This rank's share of a batch under distributed training (contiguous chunks).

        Every tensor whose first dimension is the batch size is split with
        ``tensor_split``; other entries are kept. Override it for batches of another
        structure (graphs). The run equals one process on the whole batch when the
        batch size is divisible by the number of ranks (the task losses are means).
        """
        sizes = {item.shape[0] for item in batch if isinstance(item, Tensor) and item.ndim}
        if len(sizes) != 1:
            raise NotImplementedError(
                f"benchmark {self.name!r}: cannot split this batch across ranks "
                "(override Benchmark.shard)"
            )
        return tuple(
            item.tensor_split(world)[rank] if isinstance(item, Tensor) and item.ndim else item
            for item in batch
        )

    def val_score(self, val: Mapping[str, float]) -> float:
        """Model-selection score of validation metrics (higher is better).

        Default: the mean over all metrics of ``+value`` (higher is better) or ``-value``
        (lower is better). Benchmarks with a single-task baseline may use Delta m instead.
        (Single-task baseline runs, ``stl:K``, are selected on task K's metrics alone.)
        """
        total = 0.0
        columns = self.metric_columns()
        for task, spec in columns:
            value = val[f"{task}/{spec.name}"]
            total += value if spec.higher_is_better else -value
        return total / len(columns)


_BENCHMARK_MODULES: dict[str, str] = {
    "celeba": "fairmtl.bench.celeba",
    "cityscapes": "fairmtl.bench.cityscapes",
    "multimnist": "fairmtl.bench.multimnist",
    "nyuv2": "fairmtl.bench.nyuv2",
    "qm9": "fairmtl.bench.qm9",
}


def benchmark_names() -> list[str]:
    """Names of the benchmarks the runner can train."""
    return sorted(_BENCHMARK_MODULES)


def get_benchmark(name: str) -> Benchmark:
    """The benchmark called ``name`` (its module is imported now)."""
    key = name.strip().lower()
    if key not in _BENCHMARK_MODULES:
        raise KeyError(f"unknown benchmark {name!r}; benchmarks: {', '.join(benchmark_names())}")
    module = importlib.import_module(_BENCHMARK_MODULES[key])
    bench: Benchmark = module.BENCHMARK
    return bench
