"""Smoke test of ``benchmarks/blockwise_memory.py`` on the LeNet shape: a bound below the
Jacobian's size gives blocks, and the table reports every row. (LeNet's Jacobian, 0.17 MB,
is lost in its activations' peak; the memory bound itself is measured on CelebA in
docs/speed.md and tested in tests/test_balancer_blockwise.py.)"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from types import ModuleType

import pytest
from benchmark_scripts import loaded_script

pytest.importorskip("numpy")  # the speed suite it imports from


@pytest.fixture(scope="module")
def script() -> Iterator[ModuleType]:
    with loaded_script("blockwise_memory.py", "blockwise_memory_script") as module:
        yield module


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="VmHWM and fork are Linux's")
def test_a_bound_gives_blocks_and_every_row_is_reported(script: ModuleType) -> None:
    rows = script.run([None, 20_000], steps=1, threads=1, shape="lenet")
    whole, bounded = rows
    assert whole["blocks"] == 1 and bounded["blocks"] == 9  # 170,640 B in blocks of <= 20 kB
    assert all(r["step_s"] > 0 and r["increase_mib"] >= 0 for r in rows)
    text = script.table(rows, "cmd")
    assert "| None (whole Jacobian) | 1 |" in text and "| 0.02 MB | 9 |" in text
