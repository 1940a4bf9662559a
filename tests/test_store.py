"""Tests of the SQLite results store (fairmtl.bench.store)."""

from __future__ import annotations

import math
import multiprocessing
import sqlite3
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from fairmtl.bench.store import SCHEMA_VERSION, ResultsStore, Run, StoreError

INF = math.inf
NAN = math.nan


def _start(store: ResultsStore, key: str = "mm/fairgrad:alpha=2/cpu/seed0", **over: Any) -> int:
    fields: dict[str, Any] = {
        "key": key,
        "benchmark": "multimnist",
        "method": "fairgrad:alpha=2",
        "config_name": "cpu",
        "config": {"epochs": 3, "lr": 1e-3, "tasks": ["left", "right"]},
        "seed": 0,
    }
    fields.update(over)
    return store.start_run(**fields)


def _metrics(epoch: int, scale: float = 1.0) -> dict[str, dict[str, float]]:
    return {
        "train": {"loss_0": scale * 0.5 / (epoch + 1), "loss_1": scale * 0.7 / (epoch + 1)},
        "val": {"t0/acc": 80.0 + epoch, "t1/acc": 70.0 + epoch},
        "test": {"t0/acc": 79.0 + epoch},
    }


def _count(path: Path, sql: str, params: tuple[Any, ...] = ()) -> int:
    conn = sqlite3.connect(path)
    try:
        return int(conn.execute(sql, params).fetchone()[0])
    finally:
        conn.close()


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "results" / "nested" / "fairmtl.db"


@pytest.fixture
def store(db: Path) -> Any:
    with ResultsStore(db) as opened:
        yield opened


# ---------------------------------------------------------------- round trip


def test_round_trip(store: ResultsStore, db: Path) -> None:
    assert db.is_file()  # parent folders and file created
    run_id = _start(store)
    run = store.run(run_id)
    assert isinstance(run, Run)
    assert (run.key, run.benchmark, run.method, run.config_name, run.seed) == (
        "mm/fairgrad:alpha=2/cpu/seed0", "multimnist", "fairgrad:alpha=2", "cpu", 0,
    )
    assert run.config == {"epochs": 3, "lr": 1e-3, "tasks": ["left", "right"]}
    assert run.status == "running"
    assert set(run.versions) == {"python", "platform", "torch", "numpy", "fairmtl"}
    assert all(isinstance(v, str) and v for v in run.versions.values())
    assert run.created and run.started and run.finished is None
    assert run.best_epoch is None and run.train_seconds is None and run.message is None

    for epoch in range(3):
        store.log_epoch(
            run_id, epoch=epoch, metrics=_metrics(epoch), seconds=10.0 + epoch,
            task_weights=[0.7 + epoch, 1.3], lr=1e-3 / (epoch + 1),
        )
    store.finish_run(
        run_id, final={"val": {"t0/acc": 82.0}, "test": {"t0/acc": 81.5, "t1/acc": 71.0}},
        best_epoch=2, train_seconds=33.0,
    )

    metrics = store.epoch_metrics(run_id)
    assert set(metrics) == {"train", "val", "test"}
    assert metrics["train"]["loss_1"] == [(e, 0.7 / (e + 1)) for e in range(3)]
    assert metrics["val"]["t1/acc"] == [(0, 70.0), (1, 71.0), (2, 72.0)]
    assert metrics["test"] == {"t0/acc": [(0, 79.0), (1, 80.0), (2, 81.0)]}
    assert store.final_metrics(run_id) == {
        "val": {"t0/acc": 82.0}, "test": {"t0/acc": 81.5, "t1/acc": 71.0},
    }
    assert store.epoch_seconds(run_id) == [(0, 10.0), (1, 11.0), (2, 12.0)]
    assert store.task_weights(run_id) == [(0, [0.7, 1.3]), (1, [1.7, 1.3]), (2, [2.7, 1.3])]
    assert store.lrs(run_id) == [(0, 1e-3), (1, 1e-3 / 2), (2, 1e-3 / 3)]

    done = store.run(run_id)
    assert done.status == "finished" and done.finished is not None
    assert done.best_epoch == 2 and done.train_seconds == 33.0
    assert store.runs() == [done]


def test_reopen_sees_data_and_schema(db: Path) -> None:
    with ResultsStore(db) as first:
        run_id = _start(first)
        first.log_epoch(run_id, epoch=0, metrics=_metrics(0), seconds=1.0)
    with ResultsStore(db) as second:
        assert second.epoch_seconds(run_id) == [(0, 1.0)]
        assert second.task_weights(run_id) == [] and second.lrs(run_id) == []
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()


def test_runs_filters(store: ResultsStore) -> None:
    a = _start(store, "a", benchmark="multimnist", method="ls")
    b = _start(store, "b", benchmark="multimnist", method="fairgrad", config_name="gpu")
    c = _start(store, "c", benchmark="cityscapes", method="ls")
    store.fail_run(c, "boom")
    assert [r.id for r in store.runs()] == [a, b, c]
    assert [r.id for r in store.runs(benchmark="multimnist")] == [a, b]
    assert [r.id for r in store.runs(method="ls")] == [a, c]
    assert [r.id for r in store.runs(method="ls", benchmark="cityscapes")] == [c]
    assert [r.id for r in store.runs(config_name="gpu")] == [b]
    assert [r.id for r in store.runs(status="failed")] == [c]
    assert store.runs(benchmark="nope") == []
    with pytest.raises(ValueError, match="status"):
        store.runs(status="done")


# ---------------------------------------------------------------- values


def test_nan_and_inf_round_trip(store: ResultsStore, db: Path) -> None:
    run_id = _start(store)
    store.log_epoch(
        run_id, epoch=0,
        metrics={"train": {"loss": NAN, "big": INF, "small": -INF, "zero": 0.0}},
        seconds=1.0, task_weights=[NAN, INF, -INF, 1.0],
    )
    store.finish_run(run_id, final={"test": {"nan": NAN, "inf": INF, "ninf": -INF}})
    train = store.epoch_metrics(run_id)["train"]
    assert math.isnan(train["loss"][0][1])
    assert train["big"] == [(0, INF)] and train["small"] == [(0, -INF)]
    assert train["zero"] == [(0, 0.0)]
    [(epoch, weights)] = store.task_weights(run_id)
    assert epoch == 0 and math.isnan(weights[0]) and weights[1:] == [INF, -INF, 1.0]
    final = store.final_metrics(run_id)["test"]
    assert math.isnan(final["nan"]) and final["inf"] == INF and final["ninf"] == -INF
    # Documented encoding: NaN is NULL, the infinities are REAL.
    assert _count(db, "SELECT COUNT(*) FROM epoch_metrics WHERE value IS NULL") == 1
    assert _count(db, "SELECT COUNT(*) FROM epoch_metrics WHERE typeof(value) = 'real'") == 3


def test_numpy_like_and_int_values_accepted(store: ResultsStore) -> None:
    np = pytest.importorskip("numpy")
    run_id = _start(store)
    store.log_epoch(
        run_id, epoch=np.int64(1), metrics={"val": {"a": np.float32(0.5), "b": 3}},
        seconds=np.float64(2.0), lr=np.float32(0.25),
    )
    assert store.epoch_metrics(run_id) == {"val": {"a": [(1, 0.5)], "b": [(1, 3.0)]}}
    assert store.lrs(run_id) == [(1, 0.25)]


@pytest.mark.parametrize(
    ("metrics", "match"),
    [
        ({"val": {"acc": "91.2"}}, r"metrics\['val'\]\['acc'\]"),
        ({"val": {"acc": None}}, r"metrics\['val'\]\['acc'\]"),
        ({"val": {"acc": True}}, r"metrics\['val'\]\['acc'\]"),
        ({"val": {3: 1.0}}, r"metrics\['val'\].*metric names must be non-empty str"),
        ({2: {"acc": 1.0}}, r"split names"),
        ({"val": [1.0]}, r"metrics\['val'\] must be a mapping"),
    ],
)
def test_bad_metrics_rejected_naming_split_and_metric(
    store: ResultsStore, metrics: Any, match: str
) -> None:
    run_id = _start(store)
    with pytest.raises(TypeError, match=match):
        store.log_epoch(run_id, epoch=0, metrics=metrics, seconds=1.0)
    with pytest.raises(TypeError, match=match.replace("metrics", "final")):
        store.finish_run(run_id, final=metrics)
    assert store.epoch_seconds(run_id) == [] and store.final_metrics(run_id) == {}


def test_bad_epoch_fields_rejected(store: ResultsStore) -> None:
    run_id = _start(store)
    good = {"val": {"a": 1.0}}
    with pytest.raises(ValueError, match="epoch"):
        store.log_epoch(run_id, epoch=-1, metrics=good, seconds=1.0)
    with pytest.raises(TypeError, match="epoch"):
        store.log_epoch(run_id, epoch=1.0, metrics=good, seconds=1.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="seconds"):
        store.log_epoch(run_id, epoch=0, metrics=good, seconds=NAN)
    with pytest.raises(ValueError, match="lr"):
        store.log_epoch(run_id, epoch=0, metrics=good, seconds=1.0, lr=INF)
    with pytest.raises(TypeError, match=r"task_weights\[1\]"):
        store.log_epoch(run_id, epoch=0, metrics=good, seconds=1.0, task_weights=[1.0, "x"])
    with pytest.raises(TypeError, match="config"):
        _start(store, "other", config={"f": object()})
    assert store.epoch_seconds(run_id) == []


# ---------------------------------------------------------------- idempotence and resume


def test_relogging_an_epoch_replaces_its_rows(store: ResultsStore, db: Path) -> None:
    run_id = _start(store)
    store.log_epoch(run_id, epoch=0, metrics=_metrics(0), seconds=1.0)
    store.log_epoch(run_id, epoch=1, metrics={"val": {"a": 1.0, "b": 2.0}}, seconds=5.0,
                    task_weights=[1.0, 1.0], lr=0.1)
    store.log_epoch(run_id, epoch=1, metrics={"val": {"a": 9.0}, "test": {"c": 3.0}},
                    seconds=6.0, task_weights=[0.5, 1.5], lr=0.2)
    metrics = store.epoch_metrics(run_id)
    assert metrics["val"]["a"] == [(1, 9.0)]
    assert metrics["val"]["t0/acc"] == [(0, 80.0)]
    assert "b" not in metrics["val"]
    assert metrics["test"]["c"] == [(1, 3.0)]
    assert store.epoch_seconds(run_id) == [(0, 1.0), (1, 6.0)]
    assert store.task_weights(run_id) == [(1, [0.5, 1.5])]
    assert store.lrs(run_id) == [(1, 0.2)]
    assert _count(db, "SELECT COUNT(*) FROM epochs WHERE run_id = ?", (run_id,)) == 2
    assert _count(db, "SELECT COUNT(*) FROM epoch_metrics WHERE epoch = 1") == 2
    assert _count(db, "SELECT COUNT(*) FROM epoch_metrics WHERE epoch = 0") == 5


def test_start_run_with_same_key_resumes(db: Path) -> None:
    with ResultsStore(db) as store:
        run_id = _start(store)
        for epoch in range(2):
            store.log_epoch(run_id, epoch=epoch, metrics=_metrics(epoch), seconds=1.0)
        store.fail_run(run_id, "RuntimeError: CUDA out of memory")
        failed = store.run(run_id)
        assert failed.status == "failed"
        assert failed.message == "RuntimeError: CUDA out of memory"
        assert failed.finished is not None
    with ResultsStore(db) as store:  # a new process resumes the same command
        assert _start(store) == run_id
        resumed = store.run(run_id)
        assert resumed.status == "running" and resumed.message is None
        assert resumed.finished is None and resumed.created == failed.created
        assert store.epoch_seconds(run_id) == [(0, 1.0), (1, 1.0)]
        assert len(store.runs()) == 1
        # Config key order does not matter for identity.
        assert _start(store, config={"tasks": ["left", "right"], "lr": 1e-3, "epochs": 3}) == (
            run_id
        )


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("benchmark", "cityscapes"),
        ("method", "ls"),
        ("config_name", "gpu"),
        ("seed", 1),
        ("config", {"epochs": 4, "lr": 1e-3, "tasks": ["left", "right"]}),
    ],
)
def test_conflicting_key_raises(store: ResultsStore, field: str, value: Any) -> None:
    run_id = _start(store)
    store.log_epoch(run_id, epoch=0, metrics=_metrics(0), seconds=1.0)
    with pytest.raises(StoreError, match=rf"mm/fairgrad:alpha=2/cpu/seed0.*{field}="):
        _start(store, **{field: value})
    assert len(store.runs()) == 1
    assert store.run(run_id).status == "running"
    assert store.epoch_seconds(run_id) == [(0, 1.0)]


def test_reset_run(store: ResultsStore, db: Path) -> None:
    run_id = _start(store)
    other = _start(store, "other")
    for rid in (run_id, other):
        store.log_epoch(rid, epoch=0, metrics=_metrics(0), seconds=1.0, lr=0.1)
        store.finish_run(rid, final={"test": {"acc": 1.0}}, best_epoch=0, train_seconds=1.0)
    store.reset_run(run_id)
    assert store.epoch_metrics(run_id) == {} and store.final_metrics(run_id) == {}
    assert store.epoch_seconds(run_id) == [] and store.lrs(run_id) == []
    run = store.run(run_id)
    assert run.status == "running" and run.best_epoch is None and run.finished is None
    assert store.epoch_seconds(other) == [(0, 1.0)]
    assert store.final_metrics(other) == {"test": {"acc": 1.0}}
    assert _count(db, "SELECT COUNT(*) FROM epoch_metrics WHERE run_id = ?", (run_id,)) == 0


def test_delete_run_cascades(store: ResultsStore, db: Path) -> None:
    run_id = _start(store)
    store.log_epoch(run_id, epoch=0, metrics=_metrics(0), seconds=1.0)
    store.finish_run(run_id, final={"test": {"acc": 1.0}})
    store.delete_run(run_id)
    assert store.runs() == []
    for table in ("epochs", "epoch_metrics", "final_metrics"):
        assert _count(db, f"SELECT COUNT(*) FROM {table}") == 0


# ---------------------------------------------------------------- bad input


_READERS: dict[str, Callable[[ResultsStore, int], object]] = {
    "run": lambda s, i: s.run(i),
    "epoch_metrics": lambda s, i: s.epoch_metrics(i),
    "final_metrics": lambda s, i: s.final_metrics(i),
    "epoch_seconds": lambda s, i: s.epoch_seconds(i),
    "task_weights": lambda s, i: s.task_weights(i),
    "lrs": lambda s, i: s.lrs(i),
    "log_epoch": lambda s, i: s.log_epoch(i, epoch=0, metrics={}, seconds=1.0),
    "finish_run": lambda s, i: s.finish_run(i, final={}),
    "fail_run": lambda s, i: s.fail_run(i, "x"),
    "reset_run": lambda s, i: s.reset_run(i),
    "delete_run": lambda s, i: s.delete_run(i),
}


@pytest.mark.parametrize("operation", sorted(_READERS))
def test_unknown_run_id_raises_key_error(store: ResultsStore, operation: str) -> None:
    _start(store)
    with pytest.raises(KeyError, match="no run with id 4242"):
        _READERS[operation](store, 4242)


def test_not_a_database_is_rejected_and_untouched(tmp_path: Path) -> None:
    path = tmp_path / "notes.db"
    content = b"these are my notes, not a database\n" * 50
    path.write_bytes(content)
    with pytest.raises(StoreError, match=r"notes\.db.*not an SQLite database"):
        ResultsStore(path)
    assert path.read_bytes() == content
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.db"]


def test_tiny_text_file_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "short.txt"
    path.write_bytes(b"hi")
    with pytest.raises(StoreError, match="short.txt"):
        ResultsStore(path)
    assert path.read_bytes() == b"hi"


def test_directory_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="not a file"):
        ResultsStore(tmp_path)


def test_foreign_sqlite_database_is_rejected_and_untouched(tmp_path: Path) -> None:
    path = tmp_path / "other.sqlite"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE people (name TEXT)")
    conn.execute("INSERT INTO people VALUES ('ada')")
    conn.commit()
    conn.close()
    before = path.read_bytes()
    with pytest.raises(StoreError, match=r"other\.sqlite.*not a fairmtl results database"):
        ResultsStore(path)
    assert path.read_bytes() == before


def test_newer_schema_version_is_rejected(db: Path) -> None:
    ResultsStore(db).close()
    conn = sqlite3.connect(db)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(StoreError, match=rf"fairmtl\.db.*schema version {SCHEMA_VERSION + 1}"):
        ResultsStore(db)


def test_closed_store_raises(db: Path) -> None:
    store = ResultsStore(db)
    store.close()
    store.close()  # idempotent
    with pytest.raises(StoreError, match="closed"):
        store.runs()


def test_in_memory_store(tmp_path: Path) -> None:
    with ResultsStore(":memory:") as store:
        run_id = _start(store)
        store.log_epoch(run_id, epoch=0, metrics=_metrics(0), seconds=1.0)
        assert store.epoch_seconds(run_id) == [(0, 1.0)]
    assert not (Path.cwd() / ":memory:").exists()


# ---------------------------------------------------------------- concurrency


def test_lock_held_past_timeout_raises_naming_the_path(db: Path) -> None:
    store = ResultsStore(db, timeout=0.3)
    run_id = _start(store)
    blocker = sqlite3.connect(db, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        begin = time.monotonic()
        with pytest.raises(StoreError, match=r"fairmtl\.db.*locked"):
            store.log_epoch(run_id, epoch=0, metrics=_metrics(0), seconds=1.0)
        assert time.monotonic() - begin < 5.0
        assert store.epoch_seconds(run_id) == []  # WAL: reading is not blocked
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    store.log_epoch(run_id, epoch=0, metrics=_metrics(0), seconds=1.0)  # works once released
    assert store.epoch_seconds(run_id) == [(0, 1.0)]
    store.close()


def test_two_stores_in_one_process_interleave(db: Path) -> None:
    with ResultsStore(db) as first, ResultsStore(db) as second:
        a = _start(first, "a")
        b = _start(second, "b")
        for epoch in range(5):
            first.log_epoch(a, epoch=epoch, metrics=_metrics(epoch), seconds=1.0)
            second.log_epoch(b, epoch=epoch, metrics=_metrics(epoch, 2.0), seconds=2.0)
        assert first.epoch_seconds(b) == [(e, 2.0) for e in range(5)]
        assert second.epoch_metrics(a) == first.epoch_metrics(a)


N_WRITERS = 3
N_EPOCHS = 200
SPLITS = ("train", "val", "test")
N_METRICS = 10


def _value(writer: int, epoch: int, split: int, metric: int) -> float:
    if metric == N_METRICS - 1 and epoch % 50 == 7:
        return NAN  # a diverged value now and then
    return writer * 1e6 + epoch * 100 + split * 10 + metric + 0.25


def _writer(path: str, writer: int, barrier: Any, results: Any) -> None:
    """Child process: open the (new) database at the same moment as the others, log one run."""
    try:
        barrier.wait(timeout=60)
        with ResultsStore(path) as store:
            run_id = store.start_run(
                key=f"stress/w{writer}", benchmark="stress", method=f"m{writer}",
                config_name="cpu", config={"writer": writer}, seed=writer,
            )
            for epoch in range(N_EPOCHS):
                metrics = {
                    split: {f"m{m}": _value(writer, epoch, s, m) for m in range(N_METRICS)}
                    for s, split in enumerate(SPLITS)
                }
                store.log_epoch(run_id, epoch=epoch, metrics=metrics, seconds=0.01 * epoch,
                                task_weights=[float(writer), float(epoch)], lr=1.0 / (epoch + 1))
            store.finish_run(run_id, final={"test": {"acc": float(writer)}},
                             best_epoch=N_EPOCHS - 1, train_seconds=1.5)
        results.put((writer, "ok"))
    except BaseException:  # noqa: BLE001 - the parent test reports the child's traceback
        results.put((writer, traceback.format_exc()))


def test_concurrent_writers_same_new_database(tmp_path: Path) -> None:
    """Acceptance test: several processes create and fill the same new file at once."""
    path = tmp_path / "concurrent" / "fairmtl.db"
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(N_WRITERS)
    results = ctx.Queue()
    procs = [
        ctx.Process(target=_writer, args=(str(path), w, barrier, results))
        for w in range(N_WRITERS)
    ]
    for proc in procs:
        proc.start()
    try:
        outcomes = dict(results.get(timeout=120) for _ in procs)
    finally:
        for proc in procs:
            proc.join(timeout=30)
            if proc.is_alive():
                proc.kill()
    assert outcomes == {w: "ok" for w in range(N_WRITERS)}, outcomes
    assert all(proc.exitcode == 0 for proc in procs)

    with ResultsStore(path) as store:
        runs = store.runs()
        assert sorted(r.key for r in runs) == [f"stress/w{w}" for w in range(N_WRITERS)]
        for run in runs:
            w = run.seed
            assert run.status == "finished" and run.config == {"writer": w}
            assert run.best_epoch == N_EPOCHS - 1 and run.train_seconds == 1.5
            assert store.final_metrics(run.id) == {"test": {"acc": float(w)}}
            assert store.epoch_seconds(run.id) == [(e, 0.01 * e) for e in range(N_EPOCHS)]
            assert store.lrs(run.id) == [(e, 1.0 / (e + 1)) for e in range(N_EPOCHS)]
            assert store.task_weights(run.id) == [
                (e, [float(w), float(e)]) for e in range(N_EPOCHS)
            ]
            metrics = store.epoch_metrics(run.id)
            assert sorted(metrics) == sorted(SPLITS)
            for s, split in enumerate(SPLITS):
                assert sorted(metrics[split]) == sorted(f"m{m}" for m in range(N_METRICS))
                for m in range(N_METRICS):
                    series = metrics[split][f"m{m}"]
                    assert [e for e, _ in series] == list(range(N_EPOCHS))
                    for e, got in series:
                        want = _value(w, e, s, m)
                        assert got == want or (math.isnan(got) and math.isnan(want))

    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
        assert conn.execute("SELECT COUNT(*) FROM runs").fetchone()[0] == N_WRITERS
        assert conn.execute("SELECT COUNT(*) FROM epochs").fetchone()[0] == N_WRITERS * N_EPOCHS
        assert conn.execute("SELECT COUNT(*) FROM epoch_metrics").fetchone()[0] == (
            N_WRITERS * N_EPOCHS * len(SPLITS) * N_METRICS
        )
        duplicates = conn.execute(
            "SELECT COUNT(*) FROM (SELECT run_id, epoch, split, name FROM epoch_metrics "
            "GROUP BY run_id, epoch, split, name HAVING COUNT(*) > 1)"
        ).fetchone()[0]
        assert duplicates == 0
    finally:
        conn.close()
