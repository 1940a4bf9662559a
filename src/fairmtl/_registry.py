"""Registry of methods by name, so that ``fairmtl.make("fairgrad", alpha=2.0)`` builds any method.

A method registers itself in its own file with the :func:`register` decorator; nothing
outside that file needs to know its name.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

_T = TypeVar("_T", bound=type)
_REGISTRY: dict[str, type] = {}


def _key(name: str) -> str:
    return name.strip().lower().replace("_", "-")


def register(name: str) -> Callable[[_T], _T]:
    """Class decorator that makes ``cls`` constructible through :func:`make` under ``name``."""

    def decorator(cls: _T) -> _T:
        key = _key(name)
        if key in _REGISTRY and _REGISTRY[key] is not cls:
            raise ValueError(f"method name {name!r} is already registered by {_REGISTRY[key]!r}")
        _REGISTRY[key] = cls
        cls.registered_name = key  # type: ignore[attr-defined]
        return cls

    return decorator


def available() -> list[str]:
    """The registered method names, sorted."""
    return sorted(_REGISTRY)


def lookup(name: str) -> type:
    """The class registered under ``name`` (KeyError listing the available names)."""
    if not isinstance(name, str):
        raise TypeError(f"expected a method name (str), got {type(name).__name__}")
    key = _key(name)
    if key not in _REGISTRY:
        raise KeyError(f"unknown method {name!r}; available: {', '.join(available())}")
    return _REGISTRY[key]


def make(name: str, **kwargs: Any) -> Any:
    """Build a registered method (aggregator, loss weighting or loss transform) by name.

    >>> import fairmtl
    >>> fairmtl.make("fairgrad", alpha=2.0)
    FairGrad(alpha=2.0)

    Names are case-insensitive and ``_`` equals ``-``. Keyword arguments go to the
    constructor, which validates them.
    """
    if not isinstance(name, str):
        raise TypeError(f"make() expects a method name (str), got {type(name).__name__}")
    cls = lookup(name)
    try:
        return cls(**kwargs)
    except TypeError as exc:  # unknown keyword: say which method refused it
        raise TypeError(f"make({name!r}): {exc}") from exc
