"""Importing a benchmark script (a plain file, not a package) as a module in tests."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@contextmanager
def loaded_script(filename: str, module_name: str) -> Iterator[ModuleType]:
    """``benchmarks/<filename>`` imported as ``module_name``, registered in ``sys.modules``
    while in use (dataclasses look their module up there)."""
    spec = importlib.util.spec_from_file_location(module_name, BENCHMARKS / filename)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(module_name, None)
