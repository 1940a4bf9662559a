"""Smoke test of ``benchmarks/speed_suite.py`` (a plain script, loaded from its path).

A tiny run must write a Markdown table with a row of numbers for every requested method,
and each reference solver the suite times must solve its problem, so that the speed
comparison is made against a correct reference.
"""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch
from benchmark_scripts import loaded_script

import fairmtl
from fairmtl.solvers.cagrad import solve_cagrad_dual

pytest.importorskip("scipy")  # the script's reference solvers

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "speed_suite.py"
METHODS = ("fairgrad", "mgda")  # two methods that every implementation has


@pytest.fixture(scope="module")
def script() -> Iterator[ModuleType]:
    """The script imported as a module."""
    with loaded_script(SCRIPT.name, "speed_suite_script") as module:
        yield module


def _section(text: str, title: str) -> str:
    """The Markdown between heading ``title`` and the next ``## `` heading."""
    start = text.index(title)
    end = text.find("\n## ", start + len(title))
    return text[start : end if end >= 0 else len(text)]


def _rows(section: str) -> dict[str, list[str]]:
    """Table rows of a section by their first cell (header and separator left out)."""
    lines = [ln for ln in section.splitlines() if ln.startswith("|")]
    cells = [[c.strip() for c in ln.strip().strip("|").split("|")] for ln in lines[2:]]
    return {row[0]: row for row in cells}


def _number(cell: str) -> float:
    value = float(cell.rstrip("x").rstrip("%").strip())
    assert math.isfinite(value), cell
    return value


def _small_gram(k: int = 4, seed: int = 3) -> np.ndarray:
    """A well-conditioned Gram matrix of k gradients with unequal norms."""
    rng = np.random.default_rng(seed)
    g = rng.standard_normal((k, 12)) * np.array([0.5, 1.0, 2.0, 4.0][:k])[:, None]
    g[1] += 0.6 * g[0]  # some conflict and some alignment
    return g @ g.T


def test_suite_writes_a_row_per_method(script: ModuleType, tmp_path: Path) -> None:
    """One round on lenet: a row per method with numbers in every implementation's columns."""
    out = tmp_path / "speed.md"
    argv = [
        "--shapes", "lenet", "--methods", *METHODS, "--rounds", "1", "--steps", "1",
        "--warmup", "0", "--lenet-batch", "32", "--threads", "1", "--device", "cpu",
        "--no-memory", "--solver-ks", "2", "3", "--solver-repeats", "3", "--out", str(out),
    ]  # fmt: skip
    if importlib.util.find_spec("torchjd") is None:
        argv.append("--no-torchjd")
    if importlib.util.find_spec("cvxpy") is None:
        argv.append("--no-reference")
    assert script.main(argv) == 0
    text = out.read_text(encoding="utf-8")
    assert "Command:" in text and "torch" in text and "load average" in text

    rows = _rows(_section(text, "## lenet"))
    assert set(rows) == {"ls", *METHODS}, rows
    assert _number(rows["ls"][2]) == pytest.approx(1.0)
    for method in METHODS:
        cells = rows[method]
        assert _number(cells[1]) > 0 and _number(cells[2]) > 0  # fairmtl ms, / LS
        assert _number(cells[3]) > 0  # features mode / LS
        if "--no-torchjd" not in argv:
            assert _number(cells[4]) > 0 and _number(cells[5]) > 0  # TorchJD ms, ratio
        if "--no-reference" not in argv:
            assert _number(cells[6]) > 0 and _number(cells[7]) > 0  # reference ms, ratio

    lines = [ln for ln in _section(text, "## Solver only").splitlines() if ln.startswith("|")]
    cells = [[c.strip() for c in ln.strip().strip("|").split("|")] for ln in lines[2:]]
    found = {(row[0], int(row[1])): row for row in cells}
    rows_expected = (*METHODS, "mgda/fw")  # MGDA against both reference solvers
    assert set(found) == {(m, k) for m in rows_expected for k in (2, 3)}, lines
    for cells in found.values():
        assert _number(cells[2]) > 0 and _number(cells[3]) >= 0 and _number(cells[4]) >= 0
        assert _number(cells[5]) > 0.999  # both solvers find the same direction
    notes = _section(text, "## Notes")
    assert "Features mode on lenet" in notes and "Solver speed-up at K = 3" in notes


def test_solvers_only_writes_just_the_solver_table(script: ModuleType, tmp_path: Path) -> None:
    out = tmp_path / "solvers.md"
    argv = [
        "--solvers-only", "--methods", "cagrad", "--solver-ks", "3", "--solver-repeats", "3",
        "--device", "cpu", "--out", str(out),
    ]  # fmt: skip
    assert script.main(argv) == 0
    text = out.read_text(encoding="utf-8")
    assert "Shapes: none (--solvers-only)" in text
    assert "## lenet" not in text and "## Jacobian floor" not in text
    lines = [ln for ln in _section(text, "## Solver only").splitlines() if ln.startswith("|")]
    assert [ln.split("|")[1].strip() for ln in lines[2:]] == ["cagrad"]
    notes = _section(text, "## Notes")
    assert "Solver speed-up at K = 3" in notes and "Memory:" not in notes


def test_memory_subprocess_measures_a_row(script: ModuleType, tmp_path: Path) -> None:
    """With memory on, a subprocess per row reports the peak increase in MiB."""
    out = tmp_path / "speed.md"
    argv = [
        "--shapes", "lenet", "--methods", "ls", "--rounds", "1", "--steps", "1",
        "--warmup", "0", "--lenet-batch", "32", "--threads", "1", "--device", "cpu",
        "--no-torchjd", "--no-reference", "--no-solvers", "--out", str(out),
    ]  # fmt: skip
    assert script.main(argv) == 0
    rows = _rows(_section(out.read_text(encoding="utf-8"), "## lenet"))
    assert set(rows) == {"ls"}
    assert _number(rows["ls"][8]) >= 0  # memory (MiB)


def test_reference_fairgrad_solves_its_equation(script: ModuleType) -> None:
    """scipy's least_squares reference: A w = w^(-1/alpha) with w > 0."""
    a = _small_gram()
    w = script.reference_fairgrad(a, 2.0)
    assert np.all(w > 0)
    rhs = w ** (-0.5)
    err = np.linalg.norm(a @ w - rhs) / (
        np.linalg.norm(a, 2) * np.linalg.norm(w) + np.linalg.norm(rhs)
    )
    assert err < 1e-6
    ours = fairmtl.make("fairgrad", alpha=2.0).weights(torch.from_numpy(a)).numpy()
    np.testing.assert_allclose(w, ours, rtol=1e-4)


@pytest.mark.parametrize("solver", ["reference_mgda", "reference_mgda_fw"])
def test_reference_mgda_reaches_the_min_norm(script: ModuleType, solver: str) -> None:
    """Projected gradient and Frank-Wolfe: simplex weights whose min-norm value matches
    fairmtl's MGDA (to the references' 0.999 / 0.001 clipping of the end points)."""
    for k in (2, 3, 4):
        a = _small_gram(k)
        w = getattr(script, solver)(a)
        assert np.all(w >= 0) and w.sum() == pytest.approx(1.0)
        ours = fairmtl.make("mgda").weights(torch.from_numpy(a)).numpy()
        assert float(w @ a @ w) == pytest.approx(float(ours @ a @ ours), abs=1e-3 * a.max())


def test_reference_cagrad_reaches_the_dual_optimum(script: ModuleType) -> None:
    """SLSQP on CAGrad's dual: objective close to fairmtl's exact optimum."""
    a = _small_gram()
    coef, w = script.reference_cagrad(a, 0.4)
    assert np.all(w >= -1e-9) and w.sum() == pytest.approx(1.0, abs=1e-6)
    exact = solve_cagrad_dual(torch.from_numpy(a), 0.4).weights.numpy()
    f_ref = script.cagrad_dual_objective(a, w, 0.4)
    f_exact = script.cagrad_dual_objective(a, exact, 0.4)
    assert f_ref == pytest.approx(f_exact, abs=1e-5 * a.max())
    ours = fairmtl.make("cagrad").weights(torch.from_numpy(a)).numpy()
    cosine = (coef @ a @ ours) / math.sqrt((coef @ a @ coef) * (ours @ a @ ours))
    assert cosine > 0.999


def test_reference_nash_mtl_solves_its_equation(script: ModuleType) -> None:
    """cvxpy's sequential convex approximation: A a = 1 / a for A / ||A||_F, within 1e-3."""
    pytest.importorskip("cvxpy")
    a = _small_gram()
    solver = script.NashReference(a.shape[0])
    alpha = solver(a)
    normalised = a / np.linalg.norm(a)
    assert np.all(alpha > 0)
    assert np.linalg.norm(normalised @ alpha - 1.0 / alpha) < 1e-3
    ours = fairmtl.make("nash-mtl").weights(torch.from_numpy(a)).numpy()
    cosine = (alpha @ a @ ours) / math.sqrt((alpha @ a @ alpha) * (ours @ a @ ours))
    assert cosine > 0.9999


def test_report_replaces_only_the_results_section(script: ModuleType) -> None:
    """``--out docs/speed.md`` keeps the explanation above ``## Results``."""
    report = "# Speed suite\n\nCommand: `x`\n\n## lenet\n\n| a |\n"
    doc = "# Speed\n\nWhat is measured.\n\n## Results\n\nPlaceholder.\n"
    merged = script.embed_report(doc, report)
    assert merged.startswith("# Speed\n\nWhat is measured.\n\n## Results\n")
    assert "Placeholder" not in merged and "### lenet" in merged and "# Speed suite" not in merged
    assert script.embed_report(merged, report) == merged  # idempotent
    assert script.embed_report(None, report) == report
    assert script.embed_report("no heading here\n", report) == report


def test_torchjd_note_names_the_methods_not_faster_and_the_noise_level(
    script: ModuleType,
) -> None:
    """A method not faster than TorchJD is named with its ratio, next to the difference
    between two runners of the same LS step (the run-to-run noise)."""
    res = script.ShapeResult("lenet", "LeNet", 2)
    res.times = {
        ("fairmtl", "ls"): [0.100, 0.104, 0.102],
        ("reference", "ls"): [0.097, 0.098, 0.099],
        ("fairmtl", "fairgrad"): [0.20, 0.20, 0.20],
        ("torchjd", "fairgrad"): [0.25, 0.25, 0.25],
        ("fairmtl", "imtl-g"): [0.212, 0.212, 0.212],
        ("torchjd", "imtl-g"): [0.200, 0.200, 0.200],
    }
    args = type("Args", (), {"device_obj": torch.device("cpu")})()
    text = " ".join(script.notes([res], ["ls", "fairgrad", "imtl-g"], [], [], args))
    assert "fairmtl faster for 1 of 2 methods; more than 10 % slower for none." in text
    assert "Not faster: imtl-g (1.06)" in text
    assert "differed by 4 %" in text  # 102 ms vs 98 ms
    res.times[("fairmtl", "imtl-g")] = [0.19, 0.19, 0.19]
    text = " ".join(script.notes([res], ["ls", "fairgrad", "imtl-g"], [], [], args))
    assert "Not faster" not in text
