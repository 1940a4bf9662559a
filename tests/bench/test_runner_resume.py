"""SIGKILL in the middle of an epoch, then the same command again: the run ends exactly as
an uninterrupted one, with no duplicate or missing rows in the results store."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import fairmtl
from fairmtl._registry import lookup
from fairmtl.aggregators.base import Aggregator
from fairmtl.bench.base import get_benchmark
from fairmtl.bench.checkpoint import checkpoint_path
from fairmtl.bench.runner import run_key
from fairmtl.bench.store import ResultsStore
from fairmtl.weighting.base import Weighting

pytest.importorskip("mlxtend")

SCRIPT = Path(__file__).with_name("run_resumable.py")
SRC = Path(fairmtl.__file__).resolve().parents[1]


def _stateful_composition() -> str:
    """A weighting that learns from the post-step losses, with a random (seeded) aggregator.

    Found by capability, not by name: the hardest case for a bit-exact resume (optimizer
    state inside the method, a random generator, a second forward pass)."""
    names = fairmtl.available()
    weighting = next(n for n in names if isinstance(lookup(n), type) and issubclass(lookup(n), Weighting)
                     and lookup(n).needs_observe)  # fmt: skip
    aggregator = next(n for n in names if issubclass(lookup(n), Aggregator)
                      and not lookup(n).deterministic and lookup(n).requires_losses is False)  # fmt: skip
    return f"{weighting}+{aggregator}"


def _reinforcement_weighting() -> str:
    """The default method with the largest state: a replay buffer and an actor-critic agent."""
    bench = get_benchmark("multimnist")
    sizes = {}
    for method in bench.default_methods:
        cls = lookup(method.split(":")[0])
        if issubclass(cls, Weighting):
            sizes[method] = len(repr(cls().state_dict()))
    return max(sizes, key=sizes.get)


def _run(tmp: Path, method: str, kill_at: str | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(SRC) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    args = [sys.executable, str(SCRIPT), str(tmp / "runs.db"), str(tmp / "ckpt"), method]
    if kill_at:
        args.append(kill_at)
    return subprocess.run(args, env=env, capture_output=True, text=True, timeout=300, check=False)


def _rows(db: Path) -> list[tuple]:
    with sqlite3.connect(db) as con:
        return con.execute(
            "SELECT epoch, split, name, value FROM epoch_metrics ORDER BY epoch, split, name"
        ).fetchall()


@pytest.mark.parametrize("method", [_stateful_composition(), _reinforcement_weighting()])
def test_sigkill_mid_epoch_then_rerun_equals_uninterrupted(tmp_path: Path, method: str) -> None:
    clean, crashed = tmp_path / "clean", tmp_path / "crashed"
    done = _run(clean, method)
    assert done.returncode == 0, done.stderr

    killed = _run(crashed, method, kill_at="1:4")  # second epoch, after its 4th step
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    with ResultsStore(crashed / "runs.db") as store:
        (run,) = store.runs()
        assert run.status == "running"
        assert [e for e, _ in store.epoch_seconds(run.id)] == [1]  # epoch 2 never landed

    resumed = _run(crashed, method)
    assert resumed.returncode == 0, resumed.stderr

    # Every metric of every epoch, bit for bit, and exactly one row each.
    clean_rows, crashed_rows = _rows(clean / "runs.db"), _rows(crashed / "runs.db")
    assert len(crashed_rows) == len({(e, s, n) for e, s, n, _ in crashed_rows})
    assert crashed_rows == clean_rows
    assert {e for e, *_ in crashed_rows} == {1, 2, 3}
    with ResultsStore(clean / "runs.db") as a, ResultsStore(crashed / "runs.db") as b:
        (ra,), (rb,) = a.runs(), b.runs()
        assert rb.status == "finished"
        assert a.final_metrics(ra.id) == b.final_metrics(rb.id)
        assert ra.best_epoch == rb.best_epoch
        assert a.task_weights(ra.id) == b.task_weights(rb.id)
        assert [e for e, _ in b.epoch_seconds(rb.id)] == [1, 2, 3]

    # The final models are identical too.
    key = run_key("multimnist", method, "cpu", _overrides(), 3)
    ma = torch.load(checkpoint_path(clean / "ckpt", key), weights_only=False)["model"]
    mb = torch.load(checkpoint_path(crashed / "ckpt", key), weights_only=False)["model"]
    assert ma.keys() == mb.keys()
    for name in ma:
        assert torch.equal(ma[name], mb[name]), name


def _overrides() -> dict:
    sys.path.insert(0, str(SCRIPT.parent))
    from run_resumable import OVERRIDES

    return OVERRIDES


def test_two_runs_writing_to_one_database_at_once_both_land(tmp_path: Path) -> None:
    bench = get_benchmark("multimnist")
    methods = [bench.default_methods[0], bench.default_methods[-1]]
    env = dict(os.environ, PYTHONPATH=str(SRC) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    db, ckpt = str(tmp_path / "shared.db"), str(tmp_path / "ckpt")
    procs = [
        subprocess.Popen([sys.executable, str(SCRIPT), db, ckpt, m], env=env,
                         stderr=subprocess.PIPE, text=True)
        for m in methods
    ]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
    with ResultsStore(tmp_path / "shared.db") as store:
        runs = {r.method: r for r in store.runs()}
        assert sorted(runs) == sorted(methods)
        for run in runs.values():
            assert run.status == "finished"
            assert [e for e, _ in store.epoch_seconds(run.id)] == [1, 2, 3]
            metrics = store.epoch_metrics(run.id)
            for split in ("train", "val", "test"):
                for curve in metrics[split].values():
                    assert [e for e, _ in curve] == [1, 2, 3]
    with sqlite3.connect(tmp_path / "shared.db") as con:
        assert con.execute("PRAGMA integrity_check").fetchone() == ("ok",)
