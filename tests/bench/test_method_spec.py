"""Method specifications: parsing, composition, and arguments filled in from the run."""

from __future__ import annotations

import inspect

import pytest
import torch

import fairmtl
from fairmtl._registry import lookup
from fairmtl.aggregators.base import Aggregator
from fairmtl.bench.methods import build_balancer, parse_method
from fairmtl.transforms import LossTransform
from fairmtl.weighting.base import Weighting


def _first(base: type, where=lambda cls: True) -> str:
    return next(n for n in fairmtl.available() if issubclass(lookup(n), base) and where(lookup(n)))


def _takes(arg: str):
    return lambda cls: arg in inspect.signature(cls).parameters


def test_parse_parts_and_values() -> None:
    agg = _first(Aggregator)
    spec = parse_method(f" {agg}:a=2,b=0.5,c=K,d=true ")
    assert spec.text == f"{agg}:a=2,b=0.5,c=K,d=true"
    (part,) = spec.parts
    assert part.name == agg and dict(part.kwargs) == {"a": 2, "b": 0.5, "c": "K", "d": True}
    assert parse_method("stl:1", 2).stl_task == 1 and parse_method("stl:1").is_stl


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "non-empty"),
        ("stl:x", "stl:K"),
        ("stl:2", "out of range"),
        ("nope", "unknown method 'nope'"),
        ("+", "empty method name"),
    ],
)
def test_parse_errors(text: str, message: str) -> None:
    with pytest.raises((ValueError, KeyError), match=message):
        parse_method(text, 2)


def test_bad_option_syntax_names_the_part() -> None:
    agg = _first(Aggregator)
    with pytest.raises(ValueError, match=f"key=value in '{agg}:oops'"):
        parse_method(f"{agg}:oops")


def test_composition_builds_one_pipeline() -> None:
    t, w, a = _first(LossTransform), _first(Weighting), _first(Aggregator)
    balancer = build_balancer(parse_method(f"{t}+{w}+{a}"), num_tasks=2)
    assert isinstance(balancer.transform, lookup(t))
    assert isinstance(balancer.weighting, lookup(w))
    assert isinstance(balancer.aggregator, lookup(a))
    with pytest.raises(ValueError, match="two aggregators"):
        build_balancer(parse_method(f"{a}+{a}"))
    with pytest.raises(ValueError, match="single-task baseline"):
        build_balancer(parse_method("stl:0"))


def test_unknown_option_names_the_method() -> None:
    a = _first(Aggregator)
    with pytest.raises(TypeError, match=f"method '{a}'"):
        build_balancer(parse_method(f"{a}:no_such_option=1"))


def test_seed_and_optimizer_come_from_the_run_unless_given() -> None:
    name = _first(Weighting, _takes("seed"))
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    made = build_balancer(parse_method(name), seed=7, optimizer=opt).weighting
    again = build_balancer(parse_method(name), seed=7, optimizer=opt).weighting
    other = build_balancer(parse_method(f"{name}:seed=8"), seed=7, optimizer=opt).weighting
    assert repr(made.state_dict()) == repr(again.state_dict())
    assert repr(made.state_dict()) != repr(other.state_dict())
    with_opt = _first(Weighting, _takes("optimizer"))
    assert build_balancer(parse_method(with_opt), optimizer=opt).weighting.optimizer is opt


def test_layer_comes_from_the_model() -> None:
    name = _first(Weighting, _takes("layer"))
    layer = list(torch.nn.Linear(3, 3).parameters())
    assert build_balancer(parse_method(name), layer=layer).weighting.layer == layer
