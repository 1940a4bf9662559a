"""Evaluation metrics: streaming per-task metrics and the overall metrics of MTL papers.

Per-task metrics
----------------
Every per-task metric is a :class:`TaskMetric`: call :meth:`~TaskMetric.update` once per
batch of an evaluation set, then :meth:`~TaskMetric.compute` for the values over the whole
set, and :meth:`~TaskMetric.reset` before the next evaluation. ``specs`` lists the values
a metric produces (name and direction), in the order of ``compute()``'s keys.

Accumulation happens without gradient, on the device of the first batch, in int64 counts
and float64 sums (float32 on Apple ``mps``, which has no float64), and without a host
synchronisation in ``update()`` on an accelerator. Invalid *values* (a label outside the
class range, a non-binary target) therefore cannot always be reported at once: on the
CPU ``update()`` raises; on an accelerator the first offending value is recorded on the
device and ``compute()`` raises the same ``ValueError``. Invalid *shapes and dtypes* are
reported by ``update()`` everywhere.

Dense-prediction metrics follow the evaluation code of MTAN (Liu et al., CVPR 2019) as
reused by CAGrad, Nash-MTL, FAMO and FairGrad (Ban & Ji 2024). That code averages depth and
normal metrics over batches (so its "median" angle is a mean of batch medians);
:class:`Depth` and :class:`Normal` compute exact whole-set values by default and offer the
references' way as ``mode="batch"``. Segmentation uses a confusion matrix over the whole
set in both the references and here.

Overall metrics
---------------
:func:`delta_m` (the relative performance drop against single-task learning, Maninis et
al. 2019, as printed in FairGrad Sec. 5.1), :func:`mean_rank` (MR), :func:`relative_time`
(IGB's T) and :func:`mean_and_stderr`.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from fairmtl._checks import check_int, check_real

__all__ = [
    "MAE",
    "Accuracy",
    "BinaryF1",
    "Depth",
    "MetricSpec",
    "Normal",
    "Segmentation",
    "SuccessRate",
    "TaskMetric",
    "delta_m",
    "mean_and_stderr",
    "mean_rank",
    "relative_time",
]


@dataclass(frozen=True)
class MetricSpec:
    """One scalar metric: its ``name`` (a key of ``compute()``) and its direction."""

    name: str
    higher_is_better: bool


# ----------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------


def _shape(t: Tensor) -> str:
    return str(tuple(t.shape))


def _is_integer(t: Tensor) -> bool:
    """An integer dtype other than bool."""
    return not (t.dtype.is_floating_point or t.dtype.is_complex or t.dtype == torch.bool)


def _fmt(value: float) -> str:
    """A recorded bad value for an error message: integers without a trailing ``.0``."""
    if math.isfinite(value) and value == int(value):
        return str(int(value))
    return repr(value)


def _as_tensor(owner: str, name: str, x: object) -> Tensor:
    if not isinstance(x, Tensor):
        raise TypeError(f"{owner}: {name} must be a torch.Tensor, got {type(x).__name__}")
    return x.detach()


def _float_dtype(device: torch.device) -> torch.dtype:
    """The accumulation dtype: float64, except on ``mps`` which has none."""
    return torch.float32 if device.type == "mps" else torch.float64


def _flatten_column(owner: str, name: str, x: Tensor) -> Tensor:
    """``(B,)`` or ``(B, 1)`` -> ``(B,)``; anything else is a ValueError."""
    if x.dim() == 1:
        return x
    if x.dim() == 2 and x.shape[1] == 1:
        return x[:, 0]
    raise ValueError(f"{owner}: {name} must have shape (B,) or (B, 1), got {_shape(x)}")


def _checks_eagerly(device: torch.device) -> bool:
    """Whether a value check may inspect values in ``update()``: only where no host
    synchronisation is involved, i.e. on the CPU."""
    return device.type == "cpu"


class _ValueCheck:
    """Finds values that break a rule, with no host synchronisation on an accelerator.

    ``observe(values, bad)`` takes the values and a same-shaped boolean mask of those that
    break the rule. On the CPU it raises at once. Elsewhere it keeps, on the device, the
    number of bad values seen and the first one, and :meth:`raise_if_bad` (called by
    ``compute()``) raises the same error.
    """

    def __init__(self, message: Callable[[str, int], str]) -> None:
        self._message = message
        self._count: Tensor | None = None
        self._first: Tensor | None = None

    def reset(self) -> None:
        self._count = None
        self._first = None

    def observe(self, values: Tensor, bad: Tensor) -> None:
        flat_bad = bad.reshape(-1)
        flat_values = values.reshape(-1)
        if flat_bad.numel() == 0:
            return
        if _checks_eagerly(values.device):
            if bool(flat_bad.any()):
                where = int(flat_bad.nonzero()[0, 0])
                n_bad = int(flat_bad.sum())
                raise ValueError(self._message(_fmt(float(flat_values[where])), n_bad))
            return
        store = _float_dtype(values.device)
        count = flat_bad.sum(dtype=torch.int64)
        index = flat_bad.to(torch.uint8).argmax().reshape(1)  # first bad entry, if any
        first = flat_values.gather(0, index)[0].to(store)
        if self._count is None or self._first is None:
            self._count = torch.zeros((), dtype=torch.int64, device=values.device)
            self._first = torch.zeros((), dtype=store, device=values.device)
        # keep the earliest bad value: replace only while none has been seen
        self._first = torch.where(self._count > 0, self._first, first)
        self._count = self._count + count

    def raise_if_bad(self) -> None:
        if self._count is None or self._first is None:
            return
        count = int(self._count)
        if count > 0:
            raise ValueError(self._message(_fmt(float(self._first)), count))


# ----------------------------------------------------------------------------------------
# per-task metrics
# ----------------------------------------------------------------------------------------


class TaskMetric(ABC):
    """A streaming metric of one task: ``reset()``, ``update(pred, target)``, ``compute()``.

    ``specs`` names the values ``compute()`` returns, in order. ``update()`` accumulates
    one batch (no gradient, on the batch's device); ``compute()`` returns a dict whose keys
    are ``[s.name for s in specs]`` in that order, or raises ``ValueError`` when no sample
    was accumulated since the last ``reset()``.
    """

    specs: tuple[MetricSpec, ...] = ()

    def __init__(self) -> None:
        self._device: torch.device | None = None
        self._state: dict[str, Tensor] = {}
        self._samples = 0  # samples (or pixels) seen since reset, counted on the host
        self._checks: list[_ValueCheck] = []

    @property
    def names(self) -> tuple[str, ...]:
        """The keys of :meth:`compute`, in order."""
        return tuple(s.name for s in self.specs)

    def reset(self) -> None:
        """Forget everything accumulated; the next ``update()`` may use another device."""
        self._device = None
        self._samples = 0
        self._state = self._initial_state(torch.device("cpu"))
        for check in self._checks:
            check.reset()
        self._reset_extra()

    @abstractmethod
    def update(self, pred: Tensor, target: Tensor) -> None:
        """Accumulate one batch."""

    @abstractmethod
    def compute(self) -> dict[str, float]:
        """The metric values over everything accumulated since the last ``reset()``."""

    # -- for subclasses -------------------------------------------------------------------

    @abstractmethod
    def _initial_state(self, device: torch.device) -> dict[str, Tensor]:
        """Zeroed accumulators on ``device``."""

    def _reset_extra(self) -> None:
        """Reset state kept outside ``_state`` (override when there is some)."""

    def _bind(self, *tensors: Tensor) -> torch.device:
        """Check the batch is on one device, the same as earlier batches; move state there."""
        owner = type(self).__name__
        device = tensors[0].device
        for t in tensors[1:]:
            if t.device != device:
                raise ValueError(
                    f"{owner}: pred and target must be on the same device, got {device} "
                    f"and {t.device}"
                )
        if self._device is None:
            self._device = device
            self._state = self._initial_state(device)
        elif device != self._device:
            raise ValueError(
                f"{owner}: earlier batches were accumulated on {self._device}, this one is on "
                f"{device}; call reset() before switching devices"
            )
        return device

    def _require_samples(self) -> None:
        if self._samples == 0:
            raise ValueError(
                f"{type(self).__name__}.compute(): no samples were accumulated; call update() "
                "with a non-empty batch first (or after reset())"
            )
        for check in self._checks:
            check.raise_if_bad()

    def _result(self, values: Sequence[float]) -> dict[str, float]:
        return {spec.name: float(v) for spec, v in zip(self.specs, values, strict=True)}

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class Accuracy(TaskMetric):
    """Top-1 classification accuracy in percent (0-100).

    ``pred``: logits or probabilities ``(B, C)`` (arg-max over ``C``); ``target``: class
    indices ``(B,)`` of an integer dtype, in ``[0, C)``.
    """

    specs = (MetricSpec("acc", True),)

    def __init__(self) -> None:
        super().__init__()
        self._label_check = _ValueCheck(
            lambda v, n: (
                f"Accuracy: target class {v} is outside [0, C) for the C columns "
                f"of pred ({n} such targets)"
            )
        )
        self._checks = [self._label_check]
        self.reset()

    def _initial_state(self, device: torch.device) -> dict[str, Tensor]:
        return {"correct": torch.zeros((), dtype=torch.int64, device=device)}

    @torch.no_grad()
    def update(self, pred: Tensor, target: Tensor) -> None:
        pred = _as_tensor("Accuracy", "pred", pred)
        target = _as_tensor("Accuracy", "target", target)
        if pred.dim() != 2:
            raise ValueError(f"Accuracy: pred must be logits of shape (B, C), got {_shape(pred)}")
        if target.dim() != 1 or target.shape[0] != pred.shape[0]:
            raise ValueError(
                f"Accuracy: target must have shape (B,) = ({pred.shape[0]},) to match pred "
                f"{_shape(pred)}, got {_shape(target)}"
            )
        if not _is_integer(target):
            raise ValueError(
                f"Accuracy: target must hold integer class indices, got {target.dtype}"
            )
        if pred.shape[1] == 0:
            raise ValueError(f"Accuracy: pred has no classes, shape {_shape(pred)}")
        self._bind(pred, target)
        n_classes = pred.shape[1]
        self._label_check.observe(target, (target < 0) | (target >= n_classes))
        if pred.shape[0] == 0:
            return
        self._state["correct"] += (pred.argmax(dim=1) == target).sum(dtype=torch.int64)
        self._samples += pred.shape[0]

    def compute(self) -> dict[str, float]:
        self._require_samples()
        return self._result([100.0 * int(self._state["correct"]) / self._samples])


class Segmentation(TaskMetric):
    """Semantic segmentation: mean IoU and pixel accuracy, both in percent.

    A ``num_classes x num_classes`` confusion matrix (rows: target, columns: prediction) is
    accumulated over the whole evaluation set: the count of index ``num_classes * t + p``,
    like ``torch.bincount`` but with ``scatter_add_``, which needs no host synchronisation.
    Pixels whose target is ``ignore_index`` are skipped.

    * ``pix_acc`` = trace / total * 100.
    * ``miou`` = mean over classes of IoU_c = TP_c / (TP_c + FP_c + FN_c), times 100,
      averaged **only over classes with TP_c + FP_c + FN_c > 0**: a class absent from both
      the targets and the predictions of the whole set has no defined IoU and is left out
      (the MTAN/Nash-MTL code would return NaN; on NYUv2's test set every class occurs, so
      the two agree there).

    ``pred``: logits ``(B, C, H, W)`` with ``C == num_classes`` (arg-max over ``C``) or labels
    ``(B, H, W)`` of an integer dtype. ``target``: labels ``(B, H, W)`` of an integer dtype;
    a non-ignored label outside ``[0, num_classes)`` is a ``ValueError`` naming it.
    """

    specs = (MetricSpec("miou", True), MetricSpec("pix_acc", True))

    def __init__(self, num_classes: int, ignore_index: int = -1) -> None:
        super().__init__()
        self.num_classes = check_int("num_classes", num_classes, 1)
        if not isinstance(ignore_index, int) or isinstance(ignore_index, bool):
            raise TypeError(f"ignore_index must be an int, got {ignore_index!r}")
        self.ignore_index = ignore_index
        c = self.num_classes
        self._target_check = _ValueCheck(
            lambda v, n: (
                f"Segmentation: target label {v} is outside [0, {c}) and is not "
                f"ignore_index={ignore_index} ({n} such pixels)"
            )
        )
        self._pred_check = _ValueCheck(
            lambda v, n: (
                f"Segmentation: predicted label {v} is outside [0, {c}) "
                f"({n} such non-ignored pixels)"
            )
        )
        self._checks = [self._target_check, self._pred_check]
        self.reset()

    def __repr__(self) -> str:
        return f"Segmentation(num_classes={self.num_classes}, ignore_index={self.ignore_index})"

    def _initial_state(self, device: torch.device) -> dict[str, Tensor]:
        c = self.num_classes
        return {"confusion": torch.zeros((c, c), dtype=torch.int64, device=device)}

    @torch.no_grad()
    def update(self, pred: Tensor, target: Tensor) -> None:
        pred = _as_tensor("Segmentation", "pred", pred)
        target = _as_tensor("Segmentation", "target", target)
        c = self.num_classes
        if target.dim() != 3:
            raise ValueError(
                f"Segmentation: target must be labels of shape (B, H, W), got {_shape(target)}"
            )
        if not _is_integer(target):
            raise ValueError(f"Segmentation: target must hold integer labels, got {target.dtype}")
        if pred.dim() == 4:
            if not pred.dtype.is_floating_point:
                raise ValueError(
                    f"Segmentation: 4-D pred must be floating logits (B, C, H, W), got {pred.dtype}"
                )
            expected = (target.shape[0], c, target.shape[1], target.shape[2])
            if tuple(pred.shape) != expected:
                raise ValueError(
                    f"Segmentation: logits must have shape (B, num_classes, H, W) = {expected} "
                    f"for target {_shape(target)}, got {_shape(pred)}"
                )
            labels = pred.argmax(dim=1)
            labelled = False
        elif pred.dim() == 3:
            if not _is_integer(pred):
                raise ValueError(
                    "Segmentation: 3-D pred must hold integer labels (B, H, W), got "
                    f"{pred.dtype}; pass logits as (B, C, H, W)"
                )
            if pred.shape != target.shape:
                raise ValueError(
                    f"Segmentation: labelled pred must have the target's shape {_shape(target)}, "
                    f"got {_shape(pred)}"
                )
            labels = pred
            labelled = True
        else:
            raise ValueError(
                "Segmentation: pred must be logits (B, C, H, W) or labels (B, H, W), got "
                f"{_shape(pred)}"
            )
        self._bind(labels, target)
        valid = target != self.ignore_index
        target_ok = (target >= 0) & (target < c)
        self._target_check.observe(target, valid & ~target_ok)
        keep = valid & target_ok
        if labelled:
            pred_ok = (labels >= 0) & (labels < c)
            self._pred_check.observe(labels, keep & ~pred_ok)
            keep = keep & pred_ok
        if target.numel() == 0:
            return
        index = torch.where(keep, target.to(torch.int64) * c + labels.to(torch.int64), 0)
        counts = self._state["confusion"].view(-1)
        counts.scatter_add_(0, index.reshape(-1), keep.reshape(-1).to(torch.int64))
        self._samples += target.numel()

    @property
    def confusion_matrix(self) -> Tensor:
        """A copy of the accumulated matrix (rows: target class, columns: predicted class)."""
        return self._state["confusion"].clone()

    def compute(self) -> dict[str, float]:
        self._require_samples()
        cm = self._state["confusion"].to("cpu", torch.float64)
        total = float(cm.sum())
        if total == 0:
            raise ValueError(
                "Segmentation.compute(): every accumulated pixel had target == ignore_index="
                f"{self.ignore_index}; no pixel to score"
            )
        tp = cm.diagonal()
        union = cm.sum(dim=0) + cm.sum(dim=1) - tp  # TP + FP + FN
        present = union > 0
        miou = float((tp[present] / union[present]).mean()) * 100.0
        pix_acc = float(tp.sum()) / total * 100.0
        return self._result([miou, pix_acc])


def _check_mode(owner: str, mode: str) -> Literal["exact", "batch"]:
    if mode == "exact":
        return "exact"
    if mode == "batch":
        return "batch"
    raise ValueError(f"{owner}: mode must be 'exact' or 'batch', got {mode!r}")


def _depth_map(name: str, x: Tensor) -> Tensor:
    """``(B, 1, H, W)`` or ``(B, H, W)`` -> ``(B, H, W)``."""
    if x.dim() == 4 and x.shape[1] == 1:
        return x[:, 0]
    if x.dim() == 3:
        return x
    raise ValueError(f"Depth: {name} must have shape (B, 1, H, W) or (B, H, W), got {_shape(x)}")


class Depth(TaskMetric):
    """Depth estimation: absolute and relative error over valid pixels (target != 0).

    ``mode="exact"`` (default) pools every valid pixel of the set:
    ``abs_err = sum |p - t| / n_valid`` and ``rel_err = sum(|p - t| / |t|) / n_valid``
    (``|t|`` equals ``t`` for depths; the absolute value only keeps the sign sensible for
    other signals).

    ``mode="batch"`` is the references' way (MTAN's ``depth_error``, reused by Nash-MTL,
    FAMO and FairGrad): both values are computed per batch and then averaged over batches
    with a plain mean, so batches with few valid pixels weigh as much as full ones. A batch
    with no valid pixel is skipped (the reference would produce NaN).

    ``pred`` and ``target``: ``(B, 1, H, W)`` or ``(B, H, W)`` floating tensors of the same
    ``(B, H, W)``. Both values are lower-is-better.
    """

    specs = (MetricSpec("abs_err", False), MetricSpec("rel_err", False))

    def __init__(self, mode: Literal["exact", "batch"] = "exact") -> None:
        super().__init__()
        self.mode = _check_mode("Depth", mode)
        self.reset()

    def __repr__(self) -> str:
        return f"Depth(mode={self.mode!r})"

    def _initial_state(self, device: torch.device) -> dict[str, Tensor]:
        fdt = _float_dtype(device)
        return {
            "sums": torch.zeros(2, dtype=fdt, device=device),  # abs, rel (or batch means)
            "count": torch.zeros((), dtype=torch.int64, device=device),  # pixels or batches
        }

    @torch.no_grad()
    def update(self, pred: Tensor, target: Tensor) -> None:
        pred = _depth_map("pred", _as_tensor("Depth", "pred", pred))
        target = _depth_map("target", _as_tensor("Depth", "target", target))
        if pred.shape != target.shape:
            raise ValueError(
                f"Depth: pred and target must have the same (B, H, W), got {_shape(pred)} "
                f"and {_shape(target)}"
            )
        for name, x in (("pred", pred), ("target", target)):
            if not x.dtype.is_floating_point:
                raise ValueError(f"Depth: {name} must be floating, got {x.dtype}")
        device = self._bind(pred, target)
        if target.numel() == 0:
            return
        fdt = _float_dtype(device)
        p = pred.to(fdt)
        t = target.to(fdt)
        valid = t != 0
        err = torch.where(valid, (p - t).abs(), 0.0)
        rel = torch.where(valid, err / torch.where(valid, t.abs(), 1.0), 0.0)
        sums = torch.stack([err.sum(), rel.sum()])
        n_valid = valid.sum(dtype=torch.int64)
        if self.mode == "exact":
            self._state["sums"] += sums
            self._state["count"] += n_valid
        else:
            has = n_valid > 0
            self._state["sums"] += torch.where(has, sums / n_valid.clamp_min(1).to(fdt), 0.0)
            self._state["count"] += has.to(torch.int64)
        self._samples += target.numel()

    def compute(self) -> dict[str, float]:
        self._require_samples()
        count = int(self._state["count"])
        if count == 0:
            raise ValueError(
                "Depth.compute(): no valid pixel (target != 0) was accumulated; every target "
                "pixel was 0"
            )
        abs_err, rel_err = (self._state["sums"].to("cpu", torch.float64) / count).tolist()
        return self._result([abs_err, rel_err])


class Normal(TaskMetric):
    """Surface-normal estimation: angular error statistics in degrees.

    ``pred`` is normalised to unit length inside the metric (a zero vector counts as 90
    degrees from anything); ``target`` is used as given (the datasets store unit normals).
    Valid pixels are those whose target is not all-zero (the references test
    ``sum(target) != 0``, which differs only for vectors whose components cancel). The
    angle is ``degrees(acos(clamp(<pred, target>, -1, 1)))``, computed in float64; "within
    t" counts angles strictly below ``t``, as the references do.

    ``mode="exact"`` (default): the mean over all valid pixels of the set; the true median
    of all of them (for an even count, the **lower** of the two middle values, like
    ``torch.median``; the angles are kept as float32 on the CPU until ``compute()``, copied
    asynchronously from CUDA through pinned memory); and the percentage of angles within
    11.25, 22.5 and 30 degrees.

    ``mode="batch"``: the references' way (MTAN's ``normal_error`` with ``np.mean`` /
    ``np.median`` per batch, then a plain mean over batches), so the median is a mean of
    batch medians, each the numpy median (mean of the two middle values for even counts).
    Batches without valid pixels are skipped.

    ``pred`` and ``target``: floating ``(B, 3, H, W)`` of the same shape.
    """

    THRESHOLDS = (11.25, 22.5, 30.0)
    specs = (
        MetricSpec("angle_mean", False),
        MetricSpec("angle_median", False),
        MetricSpec("within_11.25", True),
        MetricSpec("within_22.5", True),
        MetricSpec("within_30", True),
    )

    def __init__(self, mode: Literal["exact", "batch"] = "exact") -> None:
        super().__init__()
        self.mode = _check_mode("Normal", mode)
        self._angles: list[Tensor] = []
        self._events: list[torch.cuda.Event] = []
        self.reset()

    def __repr__(self) -> str:
        return f"Normal(mode={self.mode!r})"

    def _initial_state(self, device: torch.device) -> dict[str, Tensor]:
        fdt = _float_dtype(device)
        return {
            # exact: [angle sum, -, within counts x3]; batch: sums of the 5 batch values
            "sums": torch.zeros(5, dtype=fdt, device=device),
            "count": torch.zeros((), dtype=torch.int64, device=device),  # pixels or batches
        }

    def _reset_extra(self) -> None:
        self._angles = []
        self._events = []

    def _keep_on_host(self, angles: Tensor) -> None:
        """Store a float32 copy of ``angles`` on the CPU without blocking the host."""
        flat = angles.reshape(-1).to(torch.float32)
        if flat.device.type == "cpu":
            self._angles.append(flat)
        elif flat.device.type == "cuda":
            host = torch.empty(flat.shape, dtype=torch.float32, pin_memory=True)
            host.copy_(flat, non_blocking=True)
            event = torch.cuda.Event()
            event.record(torch.cuda.current_stream(flat.device))
            self._angles.append(host)
            self._events.append(event)
        else:
            self._angles.append(flat.cpu())

    @torch.no_grad()
    def update(self, pred: Tensor, target: Tensor) -> None:
        pred = _as_tensor("Normal", "pred", pred)
        target = _as_tensor("Normal", "target", target)
        for name, x in (("pred", pred), ("target", target)):
            if x.dim() != 4 or x.shape[1] != 3:
                raise ValueError(f"Normal: {name} must have shape (B, 3, H, W), got {_shape(x)}")
            if not x.dtype.is_floating_point:
                raise ValueError(f"Normal: {name} must be floating, got {x.dtype}")
        if pred.shape != target.shape:
            raise ValueError(
                f"Normal: pred and target must have the same shape, got {_shape(pred)} and "
                f"{_shape(target)}"
            )
        device = self._bind(pred, target)
        if target.numel() == 0:
            return
        fdt = _float_dtype(device)
        p = pred.to(fdt)
        t = target.to(fdt)
        p = p / p.norm(dim=1, keepdim=True).clamp_min(1e-12)
        valid = (t != 0).any(dim=1)
        cosine = (p * t).sum(dim=1).clamp(-1.0, 1.0)
        angle = torch.rad2deg(torch.acos(cosine))
        n_valid = valid.sum(dtype=torch.int64)
        within = torch.stack(
            [(valid & (angle < thr)).sum(dtype=torch.int64) for thr in self.THRESHOLDS]
        )
        angle_sum = torch.where(valid, angle, 0.0).sum()
        if self.mode == "exact":
            zero = torch.zeros((), dtype=fdt, device=device)
            self._state["sums"] += torch.cat([torch.stack([angle_sum, zero]), within.to(fdt)])
            self._state["count"] += n_valid
            self._keep_on_host(torch.where(valid, angle, math.nan))
        else:
            has = n_valid > 0
            n = n_valid.clamp_min(1)
            ordered = torch.where(valid, angle, math.inf).reshape(-1).sort().values
            lower = ordered.gather(0, ((n - 1) // 2).reshape(1))[0]
            upper = ordered.gather(0, (n // 2).clamp_max(ordered.numel() - 1).reshape(1))[0]
            values = torch.cat(
                [
                    torch.stack([angle_sum / n.to(fdt), (lower + upper) / 2]),
                    within.to(fdt) / n.to(fdt) * 100.0,
                ]
            )
            self._state["sums"] += torch.where(has, values, 0.0)
            self._state["count"] += has.to(torch.int64)
        self._samples += valid.numel()

    def compute(self) -> dict[str, float]:
        self._require_samples()
        count = int(self._state["count"])
        if count == 0:
            raise ValueError(
                "Normal.compute(): no valid pixel (target not all-zero) was accumulated"
            )
        sums = self._state["sums"].to("cpu", torch.float64)
        if self.mode == "batch":
            return self._result((sums / count).tolist())
        for event in self._events:
            event.synchronize()
        self._events = []
        kept = [a[~torch.isnan(a)] for a in self._angles]
        angles = torch.cat(kept) if kept else torch.empty(0)
        self._angles = [angles]  # compacted: a second compute() is cheap
        median = float(torch.median(angles))
        mean = float(sums[0]) / count
        within = (sums[2:] / count * 100.0).tolist()
        return self._result([mean, median, *within])


class BinaryF1(TaskMetric):
    """F1 score of a binary task in percent, from TP/FP/FN counts over the whole set.

    ``F1 = 2 TP / (2 TP + FP + FN) * 100``; it is defined as **0** when
    ``2 TP + FP + FN == 0`` (no positive target and no positive prediction in the whole
    set), like scikit-learn's default ``zero_division`` result.

    ``pred``: probabilities ``(B,)`` or ``(B, 1)`` in ``[0, 1]``, or raw logits with
    ``logits=True`` (passed through a sigmoid). A sample is predicted positive when its
    probability is ``>= threshold``. ``target``: ``(B,)`` or ``(B, 1)`` with values in
    ``{0, 1}`` (bool, integer or floating); any other value is a ``ValueError``.
    """

    specs = (MetricSpec("f1", True),)

    def __init__(self, threshold: float = 0.5, logits: bool = False) -> None:
        super().__init__()
        self.threshold = check_real("threshold", threshold, 0.0, 1.0)
        if not isinstance(logits, bool):
            raise TypeError(f"logits must be a bool, got {logits!r}")
        self.logits = logits
        self._target_check = _ValueCheck(
            lambda v, n: f"BinaryF1: target values must be 0 or 1, got {v} ({n} such values)"
        )
        self._prob_check = _ValueCheck(
            lambda v, n: (
                f"BinaryF1: pred must hold probabilities in [0, 1], got {v} ({n} such "
                "values); pass logits=True for raw scores"
            )
        )
        self._checks = [self._target_check, self._prob_check]
        self.reset()

    def __repr__(self) -> str:
        return f"BinaryF1(threshold={self.threshold}, logits={self.logits})"

    def _initial_state(self, device: torch.device) -> dict[str, Tensor]:
        return {"counts": torch.zeros(3, dtype=torch.int64, device=device)}  # TP, FP, FN

    @torch.no_grad()
    def update(self, pred: Tensor, target: Tensor) -> None:
        pred = _flatten_column("BinaryF1", "pred", _as_tensor("BinaryF1", "pred", pred))
        target = _flatten_column("BinaryF1", "target", _as_tensor("BinaryF1", "target", target))
        if pred.shape != target.shape:
            raise ValueError(
                f"BinaryF1: pred and target must hold the same number of samples, got "
                f"{_shape(pred)} and {_shape(target)}"
            )
        if not pred.dtype.is_floating_point:
            raise ValueError(
                f"BinaryF1: pred must be floating probabilities/logits, got {pred.dtype}"
            )
        self._bind(pred, target)
        if target.dtype != torch.bool:
            self._target_check.observe(target, (target != 0) & (target != 1))
        prob = torch.sigmoid(pred) if self.logits else pred
        if not self.logits:
            self._prob_check.observe(pred, ~((pred >= 0) & (pred <= 1)))
        if target.numel() == 0:
            return
        positive = prob >= self.threshold
        truth = target == 1
        counts = torch.stack(
            [
                (positive & truth).sum(dtype=torch.int64),
                (positive & ~truth).sum(dtype=torch.int64),
                (~positive & truth).sum(dtype=torch.int64),
            ]
        )
        self._state["counts"] += counts
        self._samples += target.numel()

    def compute(self) -> dict[str, float]:
        self._require_samples()
        tp, fp, fn = (int(x) for x in self._state["counts"].tolist())
        denom = 2 * tp + fp + fn
        return self._result([0.0 if denom == 0 else 200.0 * tp / denom])


class MAE(TaskMetric):
    """Mean absolute error in original units, times ``scale``.

    Predictions and targets are given in standardised units and de-standardised as
    ``x * std + mean`` before the error (so ``mean`` cancels; it is accepted to state the
    transform explicitly). ``scale`` multiplies the result: QM9 papers report some targets
    in meV, i.e. eV times 1000 (Nash-MTL, FAMO, FairGrad Table 8).

    ``pred`` and ``target``: ``(B,)`` or ``(B, 1)`` floating, the same number of samples.
    """

    specs = (MetricSpec("mae", False),)

    def __init__(self, scale: float = 1.0, mean: float = 0.0, std: float = 1.0) -> None:
        super().__init__()
        self.scale = check_real("scale", scale, 0.0, low_open=True)
        self.mean = check_real("mean", mean)
        self.std = check_real("std", std, 0.0, low_open=True)
        self.reset()

    def __repr__(self) -> str:
        return f"MAE(scale={self.scale}, mean={self.mean}, std={self.std})"

    def _initial_state(self, device: torch.device) -> dict[str, Tensor]:
        return {"sum": torch.zeros((), dtype=_float_dtype(device), device=device)}

    @torch.no_grad()
    def update(self, pred: Tensor, target: Tensor) -> None:
        pred = _flatten_column("MAE", "pred", _as_tensor("MAE", "pred", pred))
        target = _flatten_column("MAE", "target", _as_tensor("MAE", "target", target))
        if pred.shape != target.shape:
            raise ValueError(
                f"MAE: pred and target must hold the same number of samples, got {_shape(pred)} "
                f"and {_shape(target)}"
            )
        for name, x in (("pred", pred), ("target", target)):
            if not x.dtype.is_floating_point:
                raise ValueError(f"MAE: {name} must be floating, got {x.dtype}")
        device = self._bind(pred, target)
        if target.numel() == 0:
            return
        fdt = _float_dtype(device)
        p = pred.to(fdt) * self.std + self.mean
        t = target.to(fdt) * self.std + self.mean
        self._state["sum"] += (p - t).abs().sum()
        self._samples += target.numel()

    def compute(self) -> dict[str, float]:
        self._require_samples()
        return self._result([float(self._state["sum"]) / self._samples * self.scale])


class SuccessRate(TaskMetric):
    """Fraction (0-1) of successful episodes, e.g. Meta-World MT10 (FairGrad Table 4).

    ``pred``: ``(B,)`` or ``(B, 1)`` episode outcomes, bool or numbers in ``{0, 1}``;
    ``target`` is ignored and may be ``None``.
    """

    specs = (MetricSpec("success", True),)

    def __init__(self) -> None:
        super().__init__()
        self._value_check = _ValueCheck(
            lambda v, n: f"SuccessRate: outcomes must be 0/1 or bool, got {v} ({n} such values)"
        )
        self._checks = [self._value_check]
        self.reset()

    def _initial_state(self, device: torch.device) -> dict[str, Tensor]:
        return {"successes": torch.zeros((), dtype=torch.int64, device=device)}

    @torch.no_grad()
    def update(self, pred: Tensor, target: Tensor | None = None) -> None:
        pred = _flatten_column("SuccessRate", "pred", _as_tensor("SuccessRate", "pred", pred))
        self._bind(pred)
        if pred.dtype != torch.bool:
            self._value_check.observe(pred, (pred != 0) & (pred != 1))
        if pred.numel() == 0:
            return
        self._state["successes"] += (pred == 1).sum(dtype=torch.int64)
        self._samples += pred.numel()

    def compute(self) -> dict[str, float]:
        self._require_samples()
        return self._result([int(self._state["successes"]) / self._samples])


# ----------------------------------------------------------------------------------------
# overall metrics
# ----------------------------------------------------------------------------------------


def _finite(owner: str, what: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        try:
            x = float(value)  # type: ignore[arg-type]  # numpy scalars, 0-d tensors
        except (TypeError, ValueError):
            raise TypeError(f"{owner}: {what} must be a real number, got {value!r}") from None
    else:
        x = float(value)
    if not math.isfinite(x):
        raise ValueError(f"{owner}: {what} must be finite, got {x!r}")
    return x


def delta_m(
    values: Sequence[float], baseline: Sequence[float], higher_is_better: Sequence[bool]
) -> float:
    """Delta m%: the mean relative performance drop against a baseline (usually STL).

    ``Delta m% = (1/N) sum_k (-1)^{delta_k} (M_k - B_k) / B_k * 100`` with ``delta_k = 1``
    when metric ``k`` is higher-is-better (Maninis et al. 2019; FairGrad, Ban & Ji 2024,
    Sec. 5.1; IGB eq. 5). ``N`` counts *metrics*, not tasks (NYUv2: 9). Lower is better; a
    negative value means better than the baseline on average.

    Raises ``ValueError`` if the three sequences differ in length or are empty, if a value
    is not finite, or if a baseline value is 0 (the metric index is named).
    """
    n = len(values)
    if len(baseline) != n or len(higher_is_better) != n:
        raise ValueError(
            f"delta_m: values, baseline and higher_is_better must have the same length, got "
            f"{n}, {len(baseline)} and {len(higher_is_better)}"
        )
    if n == 0:
        raise ValueError("delta_m: no metrics given")
    terms = []
    for k in range(n):
        m = _finite("delta_m", f"values[{k}]", values[k])
        b = _finite("delta_m", f"baseline[{k}]", baseline[k])
        if b == 0:
            raise ValueError(f"delta_m: baseline value of metric {k} is 0; Delta m divides by it")
        sign = -1.0 if higher_is_better[k] else 1.0
        terms.append(sign * (m - b) / b)
    return math.fsum(terms) / n * 100.0


def mean_rank(
    table: Mapping[str, Sequence[float]],
    higher_is_better: Sequence[bool],
    ties: Literal["dense", "min", "average"] = "dense",
) -> dict[str, float]:
    """Mean rank (MR): rank the methods on each metric (1 = best), average over metrics.

    ``table`` maps each method to its values, one per metric (the baseline row usually
    excluded). Equal values tie; ``ties`` decides their rank:

    * ``"dense"`` (default): tied methods share the best rank of the group and the next
      value gets the next integer (1, 2, 2, 3);
    * ``"min"``: competition ranking, the next value skips (1, 2, 2, 4);
    * ``"average"``: the mean of the positions the group occupies (1, 2.5, 2.5, 4).

    The default is the one that reproduces published MR values from their per-task rows:
    FairGrad's Table 2 (NYUv2; CAGrad and MoCo tie at 25.61 within 11.25 degrees), Table 3
    (Cityscapes) and Table 8 (QM9) all agree with ``"dense"`` to the printed two decimals,
    while ``"min"`` and ``"average"`` are off by up to 0.12 / 0.5 / 0.27 respectively.

    Returns ``{method: mean rank}`` in the table's order. ``ValueError`` for an empty
    table, a row of the wrong length, a non-finite value, or an unknown ``ties``.
    """
    if ties not in ("dense", "min", "average"):
        raise ValueError(f"mean_rank: ties must be 'dense', 'min' or 'average', got {ties!r}")
    if not table:
        raise ValueError("mean_rank: the table has no methods")
    n_metrics = len(higher_is_better)
    if n_metrics == 0:
        raise ValueError("mean_rank: higher_is_better is empty (no metrics)")
    rows: dict[str, list[float]] = {}
    for method, row in table.items():
        if len(row) != n_metrics:
            raise ValueError(
                f"mean_rank: method {method!r} has {len(row)} values, expected {n_metrics} "
                "(one per entry of higher_is_better)"
            )
        rows[method] = [
            _finite("mean_rank", f"{method!r} metric {k}", v) for k, v in enumerate(row)
        ]
    totals = dict.fromkeys(rows, 0.0)
    for k in range(n_metrics):
        sign = -1.0 if higher_is_better[k] else 1.0  # smaller key = better
        keys = {method: sign * row[k] for method, row in rows.items()}
        distinct = sorted(set(keys.values()))
        for method, key in keys.items():
            better = sum(1 for other in keys.values() if other < key)
            if ties == "dense":
                rank = 1.0 + distinct.index(key)
            elif ties == "min":
                rank = 1.0 + better
            else:
                equal = sum(1 for other in keys.values() if other == key)
                rank = better + (equal + 1) / 2.0
            totals[method] += rank
    return {method: total / n_metrics for method, total in totals.items()}


def relative_time(times: Mapping[str, float], reference: str) -> dict[str, float]:
    """Each method's time divided by the ``reference`` method's (IGB's T column).

    ``KeyError`` naming the reference (and the known methods) when it is absent;
    ``ValueError`` when the reference time is not ``> 0`` or a time is negative or not
    finite.
    """
    if reference not in times:
        raise KeyError(
            f"relative_time: reference method {reference!r} is not in times "
            f"(known: {sorted(times)})"
        )
    ref = _finite("relative_time", f"time of {reference!r}", times[reference])
    if ref <= 0:
        raise ValueError(f"relative_time: reference time of {reference!r} must be > 0, got {ref!r}")
    out = {}
    for method, t in times.items():
        x = _finite("relative_time", f"time of {method!r}", t)
        if x < 0:
            raise ValueError(f"relative_time: time of {method!r} is negative ({x!r})")
        out[method] = x / ref
    return out


def mean_and_stderr(values: Sequence[float]) -> tuple[float, float]:
    """Mean and standard error of the mean: sample std (ddof=1) / sqrt(n); 0.0 for n == 1.

    ``ValueError`` for an empty sequence or a non-finite value.
    """
    xs = [_finite("mean_and_stderr", f"values[{i}]", v) for i, v in enumerate(values)]
    n = len(xs)
    if n == 0:
        raise ValueError("mean_and_stderr: no values given")
    mean = math.fsum(xs) / n
    if n == 1:
        return mean, 0.0
    var = math.fsum((x - mean) ** 2 for x in xs) / (n - 1)
    return mean, math.sqrt(var / n)
