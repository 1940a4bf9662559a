"""Smoke test of ``benchmarks/solver_speed.py`` (a plain script, loaded from its path)."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType

import pytest

pytest.importorskip("scipy")

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "solver_speed.py"


def _load_script(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """Import the script as a module (it is not a package)."""
    spec = importlib.util.spec_from_file_location("solver_speed_script", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)  # dataclasses look it up there
    spec.loader.exec_module(module)
    return module


def test_solver_speed_script_writes_a_row_per_k(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A tiny run writes a Markdown table with one row of positive numbers for each K."""
    out = tmp_path / "t.md"
    script = _load_script(monkeypatch)
    assert script.main(["--ks", "2", "10", "--repeats", "3", "--out", str(out)]) == 0
    text = out.read_text(encoding="utf-8")
    assert "Command:" in text and "torch" in text and "scipy" in text
    for k in (2, 10):
        rows = [line for line in text.splitlines() if re.match(rf"\|\s*{k}\s*\|", line)]
        assert len(rows) == 1, text
        cells = [c.strip() for c in rows[0].strip("|").split("|")]
        fair_ms, scipy_ms, speedup = float(cells[1]), float(cells[2]), float(cells[3].rstrip("x"))
        fair_err, scipy_err = float(cells[4]), float(cells[5])
        success = float(cells[6].rstrip("%"))
        assert fair_ms > 0 and scipy_ms > 0 and speedup > 0
        assert 0 <= fair_err < 1e-8 and 0 <= scipy_err < 1e-2
        assert 0 <= success <= 100
