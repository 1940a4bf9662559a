"""Method specifications on the command line: ``"fairgrad:alpha=2"``, ``"igbv1+nash-mtl"``, ``"stl:0"``.

Grammar: parts joined by ``+``; a part is a registered name, optionally followed by
``:key=value,key=value`` (values parsed as JSON when they parse, else kept as strings).
Each part is a loss transform, a loss weighting or an aggregator; at most one of each.
``stl:K`` trains the single-task baseline of task ``K`` (its loss only).

Constructor arguments a method declares but the spec does not give are filled in from
the run: ``seed`` (the run's seed, for reproducible random methods), ``optimizer`` (the
model's optimizer, e.g. IGBv2's learning-rate ratio) and ``layer`` (the model's last
shared layer, GradNorm).
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from torch import Tensor

from fairmtl._registry import lookup
from fairmtl.aggregators.base import Aggregator
from fairmtl.balancer import Balancer
from fairmtl.bench.base import parse_value
from fairmtl.transforms import LossTransform
from fairmtl.weighting.base import Weighting


@dataclass(frozen=True)
class MethodPart:
    name: str
    kwargs: Mapping[str, Any]


@dataclass(frozen=True)
class MethodSpec:
    """A parsed method: its parts, or a single-task baseline (``stl_task`` set)."""

    text: str
    parts: tuple[MethodPart, ...]
    stl_task: int | None = None

    @property
    def is_stl(self) -> bool:
        return self.stl_task is not None


def parse_method(text: str, num_tasks: int | None = None) -> MethodSpec:
    """Parse a method specification; ValueError/KeyError say which part is wrong."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"a method specification must be a non-empty string, got {text!r}")
    text = text.strip()
    if text.lower().startswith("stl:") or text.lower() == "stl":
        arg = text[4:]
        if not arg.isdigit():
            raise ValueError(f"{text!r}: a single-task baseline is 'stl:K' with K a task index")
        task = int(arg)
        if num_tasks is not None and task >= num_tasks:
            raise ValueError(f"{text!r}: task index {task} out of range for {num_tasks} tasks")
        return MethodSpec(text, (), task)
    parts = []
    for raw in text.split("+"):
        name, _, args = raw.strip().partition(":")
        if not name:
            raise ValueError(f"{text!r}: empty method name in part {raw!r}")
        lookup(name)  # KeyError listing the available names
        kwargs: dict[str, Any] = {}
        for item in filter(None, (a.strip() for a in args.split(","))):
            key, eq, value = item.partition("=")
            if not eq or not key.strip():
                raise ValueError(f"{text!r}: expected key=value in {raw!r}, got {item!r}")
            kwargs[key.strip()] = parse_value(value.strip())
        parts.append(MethodPart(name.strip(), kwargs))
    return MethodSpec(text, tuple(parts))


def _fill_from_run(cls: type, kwargs: dict[str, Any], context: Mapping[str, Any]) -> dict[str, Any]:
    params = inspect.signature(cls).parameters
    for key, value in context.items():
        if key in params and key not in kwargs and value is not None:
            kwargs[key] = value
    return kwargs


def build_balancer(
    spec: MethodSpec,
    *,
    seed: int | None = None,
    optimizer: Any | None = None,
    layer: Sequence[Tensor] | None = None,
    num_tasks: int | None = None,
) -> Balancer:
    """The :class:`Balancer` of a (non-STL) method specification."""
    if spec.is_stl:
        raise ValueError(f"{spec.text!r} is a single-task baseline, not a multi-task method")
    context = {"seed": seed, "optimizer": optimizer, "layer": layer}
    found: dict[str, Any] = {}
    for part in spec.parts:
        cls = lookup(part.name)
        kwargs = _fill_from_run(cls, dict(part.kwargs), context)
        try:
            obj = cls(**kwargs)
        except TypeError as exc:
            raise TypeError(f"method {part.name!r} in {spec.text!r}: {exc}") from exc
        for role, base in (("aggregator", Aggregator), ("weighting", Weighting),
                           ("transform", LossTransform)):  # fmt: skip
            if isinstance(obj, base):
                if role in found:
                    raise ValueError(
                        f"{spec.text!r} has two {role}s ({found[role]!r} and {obj!r}); "
                        "compose at most one transform, one weighting and one aggregator"
                    )
                found[role] = obj
                break
        else:  # pragma: no cover - everything registered is one of the three
            raise TypeError(f"{part.name!r} is not a transform, weighting or aggregator")
    return Balancer(
        aggregator=found.get("aggregator", "sum"),
        weighting=found.get("weighting"),
        transform=found.get("transform"),
        num_tasks=num_tasks,
    )
