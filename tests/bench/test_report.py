"""The report turns stored runs into the papers' table: STL row, mean ± SE, MR, Delta m%, T."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from fairmtl.bench.base import get_benchmark
from fairmtl.bench.report import build_report, to_markdown, write_report
from fairmtl.bench.store import ResultsStore

BENCH = get_benchmark("multimnist")
# Three methods named by their place in the benchmark's list (the first is LS, T's reference).
A, B, C = BENCH.default_methods[0], BENCH.default_methods[1], BENCH.default_methods[2]


def _add(store: ResultsStore, method: str, seed: int, left: float, right: float, seconds: float,
         config: str = "cpu") -> None:  # fmt: skip
    run = store.start_run(key=f"{method}/{config}/{seed}", benchmark="multimnist", method=method,
                          config_name=config, config={}, seed=seed)  # fmt: skip
    for epoch in (1, 2):
        val = {"left/acc": left - 2 + epoch, "right/acc": right - 2 + epoch}
        store.log_epoch(run, epoch=epoch, metrics={"val": val, "test": val}, seconds=seconds / 2,
                        task_weights=[1.0, float(epoch)])  # fmt: skip
    store.finish_run(run, final={"test": {"left/acc": left, "right/acc": right}}, best_epoch=2,
                     train_seconds=seconds)  # fmt: skip


@pytest.fixture
def store(tmp_path: Path) -> ResultsStore:
    s = ResultsStore(tmp_path / "r.db")
    _add(s, "stl:0", 0, 90.0, 10.0, 5.0)
    _add(s, "stl:0", 1, 92.0, 11.0, 5.0)
    _add(s, "stl:1", 0, 10.0, 80.0, 5.0)
    _add(s, A, 0, 88.0, 84.0, 10.0)
    _add(s, A, 1, 90.0, 82.0, 12.0)
    _add(s, B, 0, 91.0, 78.0, 30.0)
    _add(s, C, 0, 85.0, 85.0, 16.5)
    _add(s, C, 0, 1.0, 1.0, 1.0, config="other")  # another configuration: not in this table
    running = s.start_run(key="x", benchmark="multimnist", method=B, config_name="cpu", config={},
                          seed=5)  # fmt: skip
    s.log_epoch(running, epoch=1, metrics={"test": {"left/acc": 0.0, "right/acc": 0.0}}, seconds=1.0)
    return s


def test_table_values(store: ResultsStore) -> None:
    report = build_report(store, BENCH, "cpu")
    assert report.columns == ["left/acc", "right/acc"]
    assert report.stl is not None
    assert report.stl.values == [(91.0, 1.0), (80.0, 0.0)]  # STL: task k from the stl:k runs
    rows = {r.method: r for r in report.rows}
    assert [r.method for r in report.rows] == [A, B, C]  # the unfinished run is left out
    assert rows[A].values == [(89.0, 1.0), (83.0, 1.0)]
    assert rows[A].seeds == [0, 1]
    # Delta m per seed against STL means, then mean ± SE:
    # seed 0: ((91-88)/91 + (80-84)/80)/2*100, seed 1: ((91-90)/91 + (80-82)/80)/2*100
    d0 = ((91 - 88) / 91 + (80 - 84) / 80) / 2 * 100
    d1 = ((91 - 90) / 91 + (80 - 82) / 80) / 2 * 100
    assert rows[A].delta_m == pytest.approx(((d0 + d1) / 2, abs(d0 - d1) / 2))
    # Ranks: left 91 (B) > 89 (A) > 85 (C); right 85 (C) > 83 (A) > 78 (B).
    assert rows[A].mean_rank == 2.0 and rows[B].mean_rank == 2.0 and rows[C].mean_rank == 2.0
    assert rows[A].relative_time == 1.0
    assert rows[B].relative_time == pytest.approx(30 / 11)
    assert rows[C].relative_time == pytest.approx(1.5)
    md = to_markdown(report)
    assert "| STL | 91.00 ± 1.00 | 80.00 |" in md
    assert f"| {A} | 89.00 ± 1.00 | 83.00 ± 1.00 | 2.00 |" in md


def test_written_files_and_plots(store: ResultsStore, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    _, paths = write_report(store, BENCH, "cpu", tmp_path / "out")
    names = sorted(p.name for p in paths)
    assert names == ["multimnist_cpu_curves.png", "multimnist_cpu_table.csv",
                     "multimnist_cpu_table.md", "multimnist_cpu_weights.png"]  # fmt: skip
    csv_text = (tmp_path / "out" / "multimnist_cpu_table.csv").read_text().splitlines()
    assert len(csv_text) == 1 + 1 + 3
    assert all(p.stat().st_size > 0 for p in paths)


def test_without_baseline_or_reference_the_report_says_so(tmp_path: Path) -> None:
    s = ResultsStore(tmp_path / "r.db")
    _add(s, B, 0, 91.0, 78.0, 30.0)
    report = build_report(s, BENCH, "cpu")
    assert report.stl is None and report.rows[0].delta_m is None
    assert report.rows[0].relative_time is None and report.rows[0].mean_rank is None
    assert any("single-task baseline" in n for n in report.notes)
    assert any("No LS run" in n for n in report.notes)
    with pytest.raises(LookupError, match="no finished runs"):
        build_report(s, BENCH, "paper")


def test_non_finite_results_are_shown_not_hidden(tmp_path: Path) -> None:
    s = ResultsStore(tmp_path / "r.db")
    _add(s, A, 0, 91.0, math.nan, 30.0)
    md = to_markdown(build_report(s, BENCH, "cpu"))
    assert "nan" in md


def test_published_tables_are_printed_next_to_the_results() -> None:
    from fairmtl.bench.published import PUBLISHED
    from fairmtl.bench.report import published_markdown

    assert published_markdown("multimnist") == ""  # no published table in the spec
    for name, tables in PUBLISHED.items():
        text = published_markdown(name)
        for table in tables:
            assert table.source in text
            for method, value in table.delta_m.items():
                assert f"| {method} |" in text and f"{value:g}" in text
            if table.stl is not None:
                assert "| STL | " + " | ".join(f"{v:g}" for v in table.stl) in text


def test_success_report_best_and_final_over_training(tmp_path: Path) -> None:
    """Reinforcement-learning runs: the best mean success over training (as published) and
    the final one, per method, with each task at the best evaluation and T against LS."""
    from fairmtl.bench.report import success_report

    s = ResultsStore(tmp_path / "r.db")
    curves = {A: [0.1, 0.5, 0.3], B: [0.2, 0.4, 0.45]}
    for method, curve in curves.items():
        run = s.start_run(key=method, benchmark="rl", method=method, config_name="cpu",
                          config={"eval_every": 100}, seed=0)  # fmt: skip
        for epoch, mean in enumerate(curve, 1):
            s.log_epoch(run, epoch=epoch, seconds=2.0 if method == A else 5.0,
                        metrics={"eval": {"mean/success": mean, "t0/success": mean * 2,
                                          "t1/success": 0.0}})  # fmt: skip
    text, paths = success_report(s, "rl", "cpu", tmp_path / "out", plots=False)
    assert f"| {A} | 0 | 0.500 | 0.300 | 1.00 | running | 300 | 1.00 | 0.00 |" in text
    assert f"| {B} | 0 | 0.450 | 0.450 | 2.50 | running | 300 | 0.90 | 0.00 |" in text
    assert paths[0].read_text().startswith(text)
