"""Embedded SQLite results store: the default record of benchmark runs.

One database file holds any number of runs. A run is identified by a stable ``key`` (the
same command gives the same key), so an interrupted run is resumed rather than duplicated::

    with ResultsStore("results/fairmtl.db") as store:
        run_id = store.start_run(key="multimnist/fairgrad:alpha=2/cpu/seed0",
                                 benchmark="multimnist", method="fairgrad:alpha=2",
                                 config_name="cpu", config={"epochs": 10}, seed=0)
        store.log_epoch(run_id, epoch=0, metrics={"val": {"t0/acc": 91.2}}, seconds=12.5,
                        task_weights=[0.7, 1.3], lr=1e-3)
        store.finish_run(run_id, final={"test": {"t0/acc": 90.8}}, best_epoch=0,
                         train_seconds=12.5)

Schema (``PRAGMA user_version`` = :data:`SCHEMA_VERSION`, ``PRAGMA application_id`` =
:data:`APPLICATION_ID`):

- ``runs``: one row per run; ``key`` is UNIQUE; ``config`` and ``versions`` are JSON text.
- ``epochs``: ``(run_id, epoch)`` primary key; training ``seconds``, ``lr`` and the epoch's
  mean ``task_weights`` (JSON list).
- ``epoch_metrics``: ``(run_id, epoch, split, name) -> value``.
- ``final_metrics``: ``(run_id, split, name) -> value``.

Foreign keys are enforced with ``ON DELETE CASCADE`` (run -> epochs -> epoch metrics, run ->
final metrics), so deleting a run or re-logging an epoch never leaves orphan rows.

Non-finite values. SQLite stores ``inf`` and ``-inf`` as ordinary REAL values, but it turns a
bound NaN into NULL. Metric values therefore live in a nullable REAL column in which NULL means
NaN: ``inf``/``-inf`` round-trip natively and NaN comes back as ``float("nan")``. Task weights
are JSON written by :mod:`json`, which spells them ``NaN``/``Infinity``/``-Infinity`` (an
extension to strict JSON that :mod:`json` reads back). ``seconds`` and ``lr`` must be finite.

Concurrency. Several processes may write to the same file at once (two training runs launched
together). The database uses WAL journal mode (readers never block the writer), every write is
a single ``BEGIN IMMEDIATE`` transaction, the connection waits up to ``timeout`` seconds for a
lock, and a "database is locked" error is retried with exponential backoff until the same
deadline, after which :class:`StoreError` names the database. Creating the schema is itself an
immediate transaction, so two processes opening a new file at the same moment are safe.
``synchronous=NORMAL`` is used: a crash of the process never loses a committed epoch; a power
cut may lose the last few.

A :class:`ResultsStore` owns one connection and must stay in the thread and process that made
it: every process (e.g. each worker after ``fork``/``spawn``) opens its own store.
"""

from __future__ import annotations

import importlib.metadata
import json
import math
import numbers
import os
import platform
import random
import sqlite3
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:  # typing.Self needs Python 3.11; the annotation is never evaluated
    from typing_extensions import Self

__all__ = [
    "APPLICATION_ID",
    "SCHEMA_VERSION",
    "STATUSES",
    "ResultsStore",
    "Run",
    "StoreError",
    "software_versions",
]

SCHEMA_VERSION = 1
"""Version of the schema written by this module (stored in ``PRAGMA user_version``)."""

APPLICATION_ID = 0x464D544C
"""``PRAGMA application_id`` of a fairmtl results database (the bytes ``FMTL``)."""

STATUSES = ("running", "finished", "failed")
"""The possible values of :attr:`Run.status`."""

_SQLITE_HEADER = b"SQLite format 3\x00"
_BUSY_CODES = (5, 6)  # SQLITE_BUSY, SQLITE_LOCKED (primary result codes)
_DEFAULT_TIMEOUT = 60.0

_SCHEMA = (
    """
    CREATE TABLE IF NOT EXISTS runs (
        id            INTEGER PRIMARY KEY,
        key           TEXT NOT NULL UNIQUE,
        benchmark     TEXT NOT NULL,
        method        TEXT NOT NULL,
        config_name   TEXT NOT NULL,
        config        TEXT NOT NULL,
        seed          INTEGER NOT NULL,
        status        TEXT NOT NULL CHECK (status IN ('running', 'finished', 'failed')),
        versions      TEXT NOT NULL,
        created       TEXT NOT NULL,
        started       TEXT NOT NULL,
        finished      TEXT,
        best_epoch    INTEGER,
        train_seconds REAL,
        message       TEXT
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS epochs (
        run_id       INTEGER NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
        epoch        INTEGER NOT NULL,
        seconds      REAL NOT NULL,
        lr           REAL,
        task_weights TEXT,
        PRIMARY KEY (run_id, epoch)
    ) WITHOUT ROWID
    """,
    """
    CREATE TABLE IF NOT EXISTS epoch_metrics (
        run_id INTEGER NOT NULL,
        epoch  INTEGER NOT NULL,
        split  TEXT NOT NULL,
        name   TEXT NOT NULL,
        value  REAL,
        PRIMARY KEY (run_id, epoch, split, name),
        FOREIGN KEY (run_id, epoch) REFERENCES epochs (run_id, epoch) ON DELETE CASCADE
    ) WITHOUT ROWID
    """,
    """
    CREATE TABLE IF NOT EXISTS final_metrics (
        run_id INTEGER NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
        split  TEXT NOT NULL,
        name   TEXT NOT NULL,
        value  REAL,
        PRIMARY KEY (run_id, split, name)
    ) WITHOUT ROWID
    """,
    "CREATE INDEX IF NOT EXISTS runs_by_benchmark ON runs (benchmark, method, config_name)",
)
_TABLES = frozenset({"runs", "epochs", "epoch_metrics", "final_metrics"})

_RUN_COLUMNS = (
    "id, key, benchmark, method, config_name, config, seed, status, versions, "
    "created, started, finished, best_epoch, train_seconds, message"
)

_T = TypeVar("_T")


class StoreError(Exception):
    """The results database cannot be used: not a database, a foreign or newer schema, a
    conflicting run key, a lock held past the timeout, or an SQLite error. The message names
    the database path."""


@dataclass(frozen=True)
class Run:
    """One recorded run (a row of the ``runs`` table).

    ``created`` is when the run was first recorded, ``started`` when it was last started
    (resumed or reset), ``finished`` when it last ended (finished *or* failed), all ISO 8601
    UTC strings. ``best_epoch``/``train_seconds`` are set by
    :meth:`ResultsStore.finish_run`; ``message`` by :meth:`ResultsStore.fail_run`.
    """

    id: int
    key: str
    benchmark: str
    method: str
    config_name: str
    config: dict[str, Any]
    seed: int
    status: str
    versions: dict[str, str]
    created: str
    started: str
    finished: str | None
    best_epoch: int | None
    train_seconds: float | None
    message: str | None


def software_versions() -> dict[str, str]:
    """Versions of the software that produced a run: python, platform, torch, numpy, fairmtl.

    Package versions come from :mod:`importlib.metadata` (torch is not imported); a package
    that is not installed reads ``"missing"``. fairmtl run from a source tree (not installed)
    falls back to ``fairmtl.__version__`` when the package is already imported.
    """
    versions = {"python": platform.python_version(), "platform": platform.platform()}
    for dist in ("torch", "numpy", "fairmtl"):
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            module = sys.modules.get(dist)
            found = getattr(module, "__version__", None)
            versions[dist] = found if isinstance(found, str) else "missing"
    return versions


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)  # Python >= 3.11
    if isinstance(code, int):
        return (code & 0xFF) in _BUSY_CODES
    text = str(exc).lower()
    return "locked" in text or "busy" in text


def _check_int(value: object, what: str, *, minimum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{what} must be an int, got {value!r} ({type(value).__name__})")
    result = int(value)
    if minimum is not None and result < minimum:
        raise ValueError(f"{what} must be >= {minimum}, got {result}")
    return result


def _check_str(value: object, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise TypeError(f"{what} must be a non-empty str, got {value!r}")
    return value


def _check_real(value: object, what: str, *, finite: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{what} must be a real number, got {value!r} ({type(value).__name__})")
    result = float(value)
    if finite and not math.isfinite(result):
        raise ValueError(f"{what} must be finite, got {result}")
    return result


def _encode_value(value: float) -> float | None:
    """Metric value -> column value: NaN is stored as NULL (SQLite would do so anyway)."""
    return None if math.isnan(value) else value


def _decode_value(value: float | None) -> float:
    return math.nan if value is None else float(value)


def _flatten_metrics(
    metrics: Mapping[str, Mapping[str, float]], what: str
) -> list[tuple[str, str, float | None]]:
    """Validate ``split -> name -> value`` and return ``(split, name, stored value)`` rows."""
    if not isinstance(metrics, Mapping):
        raise TypeError(f"{what} must be a mapping split -> {{name: value}}, got {metrics!r}")
    rows: list[tuple[str, str, float | None]] = []
    for split, values in metrics.items():
        if not isinstance(split, str) or not split:
            raise TypeError(f"{what}: split names must be non-empty str, got {split!r}")
        if not isinstance(values, Mapping):
            raise TypeError(
                f"{what}[{split!r}] must be a mapping metric name -> value, got {values!r}"
            )
        for name, value in values.items():
            if not isinstance(name, str) or not name:
                raise TypeError(
                    f"{what}[{split!r}]: metric names must be non-empty str, got {name!r}"
                )
            number = _check_real(value, f"{what}[{split!r}][{name!r}]")
            rows.append((split, name, _encode_value(number)))
    return rows


def _canonical_json(value: object, what: str) -> str:
    try:
        return json.dumps(value, sort_keys=True, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{what} is not JSON-serialisable: {exc}") from exc


class ResultsStore:
    """Read and write benchmark runs in an SQLite database at ``path``.

    Opening creates the parent folders, the file and the schema if needed. A file that is not
    an SQLite database, an SQLite database of another application, or one written by a newer
    fairmtl raises :class:`StoreError` and is left untouched. ``":memory:"`` gives a private
    in-memory store (for tests).

    ``timeout`` (seconds) bounds how long one operation waits for another process's lock,
    including retries, before raising :class:`StoreError`.

    The store keeps one connection: close it with :meth:`close` or use it as a context
    manager. It belongs to the thread and process that opened it.
    """

    def __init__(self, path: str | os.PathLike[str], *, timeout: float = _DEFAULT_TIMEOUT):
        if not isinstance(timeout, (int, float)) or isinstance(timeout, bool) or timeout < 0:
            raise ValueError(f"timeout must be a number of seconds >= 0, got {timeout!r}")
        self._timeout = float(timeout)
        self._memory = os.fspath(path) == ":memory:"
        self.path = Path(path)
        self._conn: sqlite3.Connection | None = None
        self._versions: dict[str, str] | None = None
        if not self._memory:
            self._check_file()
        self._conn = self._connect()
        try:
            self._transaction(self._init_schema, write=True)
            if not self._memory:
                self._retry(lambda: self._pragma("journal_mode", "WAL"))
                self._pragma("synchronous", "NORMAL")
        except BaseException:
            self.close()
            raise

    # ------------------------------------------------------------------ opening

    def _check_file(self) -> None:
        path = self.path
        if path.exists():
            if not path.is_file():
                raise StoreError(f"{path}: not a file (a results database must be a file)")
            header = self._read_header()
            if header and header != _SQLITE_HEADER:
                # A process creating the database may be writing page 1 right now: look again
                # before concluding that this is not a database.
                time.sleep(0.05)
                header = self._read_header()
            if header and header != _SQLITE_HEADER:
                raise StoreError(
                    f"{path}: exists but is not an SQLite database (bad header {header!r}); "
                    "it was left untouched -- choose another results file"
                )
        else:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StoreError(f"{path}: cannot create its folder: {exc}") from exc

    def _read_header(self) -> bytes:
        try:
            with open(self.path, "rb") as handle:
                return handle.read(len(_SQLITE_HEADER))
        except OSError as exc:
            raise StoreError(f"{self.path}: cannot read: {exc}") from exc

    def _connect(self) -> sqlite3.Connection:
        target = ":memory:" if self._memory else str(self.path)
        try:
            conn = sqlite3.connect(target, timeout=self._timeout, isolation_level=None)
            conn.execute("PRAGMA foreign_keys = ON")
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: cannot open the results database: {exc}") from exc
        return conn

    def _pragma(self, name: str, value: str) -> None:
        self._connection().execute(f"PRAGMA {name} = {value}").fetchall()

    def _init_schema(self, conn: sqlite3.Connection) -> None:
        app_id = conn.execute("PRAGMA application_id").fetchone()[0]
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if app_id == APPLICATION_ID:
            if version > SCHEMA_VERSION:
                raise StoreError(
                    f"{self.path}: results database has schema version {version}, newer than "
                    f"the version {SCHEMA_VERSION} this fairmtl understands; upgrade fairmtl "
                    "or use another file"
                )
            if version == SCHEMA_VERSION:
                return
            raise StoreError(
                f"{self.path}: results database has schema version {version}, which this "
                f"fairmtl (schema {SCHEMA_VERSION}) cannot migrate"
            )
        tables = sorted(
            row[0]
            for row in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
            )
        )
        if app_id != 0 or version != 0 or tables:
            raise StoreError(
                f"{self.path}: an SQLite database that is not a fairmtl results database "
                f"(application_id={app_id}, user_version={version}, tables={tables}); "
                "it was left untouched -- choose another results file"
            )
        for statement in _SCHEMA:
            conn.execute(statement)
        conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    # ------------------------------------------------------------------ plumbing

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StoreError(f"{self.path}: the results store is closed")
        return self._conn

    def _retry(self, operation: Callable[[], _T]) -> _T:
        """Run ``operation``, retrying "database is locked" with backoff until the deadline."""
        deadline = time.monotonic() + self._timeout
        delay = 0.005
        while True:
            try:
                return operation()
            except sqlite3.OperationalError as exc:
                if not _is_busy(exc):
                    raise StoreError(f"{self.path}: {exc}") from exc
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise StoreError(
                        f"{self.path}: database is locked by another connection; gave up "
                        f"after {self._timeout:g} s"
                    ) from exc
                time.sleep(min(remaining, delay * random.uniform(0.5, 1.5)))
                delay = min(delay * 2, 0.5)
            except sqlite3.Error as exc:
                raise StoreError(f"{self.path}: {exc}") from exc

    def _transaction(self, body: Callable[[sqlite3.Connection], _T], *, write: bool) -> _T:
        """Run ``body`` in one transaction (``BEGIN IMMEDIATE`` when writing), with retries.

        Any exception from ``body`` rolls the transaction back and propagates; ``body`` may be
        run again after a lock error, so it must not have effects outside the database.
        """
        conn = self._connection()

        def attempt() -> _T:
            conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            try:
                result = body(conn)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    try:
                        conn.execute("ROLLBACK")
                    except sqlite3.Error:
                        pass
                raise
            return result

        return self._retry(attempt)

    def _require_run(self, conn: sqlite3.Connection, run_id: int) -> None:
        if conn.execute("SELECT 1 FROM runs WHERE id = ?", (run_id,)).fetchone() is None:
            raise KeyError(f"no run with id {run_id} in {self.path}")

    def close(self) -> None:
        """Close the connection (idempotent). Later calls raise :class:`StoreError`."""
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._conn is None else "open"
        return f"ResultsStore({str(self.path)!r}, {state})"

    # ------------------------------------------------------------------ writing

    def start_run(
        self,
        *,
        key: str,
        benchmark: str,
        method: str,
        config_name: str,
        config: Mapping[str, Any],
        seed: int,
    ) -> int:
        """Record the start of a run and return its id.

        If a run with ``key`` already exists it is resumed: its id is returned, its status
        becomes ``'running'`` (clearing ``finished``, ``best_epoch``, ``train_seconds`` and
        ``message``) and its epochs are kept. The existing run must have the same benchmark,
        method, config name, seed and config, else :class:`StoreError` names the key and the
        differing field. A new run gets ``created``/``started`` timestamps and the software
        versions of this process.
        """
        key = _check_str(key, "key")
        fields: dict[str, object] = {
            "benchmark": _check_str(benchmark, f"run {key!r}: benchmark"),
            "method": _check_str(method, f"run {key!r}: method"),
            "config_name": _check_str(config_name, f"run {key!r}: config_name"),
            "seed": _check_int(seed, f"run {key!r}: seed"),
        }
        if not isinstance(config, Mapping):
            raise TypeError(f"run {key!r}: config must be a mapping, got {config!r}")
        fields["config"] = _canonical_json(dict(config), f"run {key!r}: config")
        if self._versions is None:
            self._versions = software_versions()
        versions = json.dumps(self._versions, sort_keys=True)

        def body(conn: sqlite3.Connection) -> int:
            now = _now()
            row = conn.execute(
                "SELECT id, benchmark, method, config_name, seed, config FROM runs "
                "WHERE key = ?",
                (key,),
            ).fetchone()
            if row is None:
                cursor = conn.execute(
                    "INSERT INTO runs (key, benchmark, method, config_name, config, seed, "
                    "status, versions, created, started) "
                    "VALUES (?, ?, ?, ?, ?, ?, 'running', ?, ?, ?)",
                    (key, fields["benchmark"], fields["method"], fields["config_name"],
                     fields["config"], fields["seed"], versions, now, now),
                )
                if cursor.lastrowid is None:  # pragma: no cover - SQLite always sets it
                    raise StoreError(f"{self.path}: inserting run {key!r} returned no id")
                return int(cursor.lastrowid)
            run_id, *stored = row
            stored_config = _canonical_json(json.loads(stored[4]), "stored config")
            for name, old in zip(
                ("benchmark", "method", "config_name", "seed", "config"),
                (*stored[:4], stored_config),
            ):
                if old != fields[name]:
                    raise StoreError(
                        f"{self.path}: run key {key!r} already exists (id {run_id}) with "
                        f"{name}={old!r}, but start_run was given {name}={fields[name]!r}; "
                        "a key must identify one run -- use another key or delete the run"
                    )
            conn.execute(
                "UPDATE runs SET status = 'running', started = ?, finished = NULL, "
                "best_epoch = NULL, train_seconds = NULL, message = NULL WHERE id = ?",
                (now, run_id),
            )
            return int(run_id)

        return self._transaction(body, write=True)

    def log_epoch(
        self,
        run_id: int,
        *,
        epoch: int,
        metrics: Mapping[str, Mapping[str, float]],
        seconds: float,
        task_weights: Sequence[float] | None = None,
        lr: float | None = None,
    ) -> None:
        """Record one epoch of a run in a single transaction.

        ``metrics`` maps split -> metric name -> value (NaN and +-inf allowed); ``seconds`` is
        the epoch's training wall time; ``task_weights`` the mean task weights over the epoch;
        ``lr`` the learning rate. Logging an epoch that is already recorded replaces all of its
        rows (metrics absent from the new call are removed).
        """
        run_id = _check_int(run_id, "run_id")
        epoch = _check_int(epoch, f"run {run_id}: epoch", minimum=0)
        what = f"run {run_id} epoch {epoch}"
        secs = _check_real(seconds, f"{what}: seconds", finite=True)
        if secs < 0:
            raise ValueError(f"{what}: seconds must be >= 0, got {secs}")
        rate = None if lr is None else _check_real(lr, f"{what}: lr", finite=True)
        weights_json: str | None = None
        if task_weights is not None:
            if isinstance(task_weights, (str, bytes)) or not isinstance(task_weights, Sequence):
                raise TypeError(f"{what}: task_weights must be a sequence of numbers or None")
            weights = [
                _check_real(w, f"{what}: task_weights[{i}]") for i, w in enumerate(task_weights)
            ]
            weights_json = json.dumps(weights)
        rows = _flatten_metrics(metrics, f"{what}: metrics")

        def body(conn: sqlite3.Connection) -> None:
            self._require_run(conn, run_id)
            conn.execute(
                "DELETE FROM epoch_metrics WHERE run_id = ? AND epoch = ?", (run_id, epoch)
            )
            conn.execute("DELETE FROM epochs WHERE run_id = ? AND epoch = ?", (run_id, epoch))
            conn.execute(
                "INSERT INTO epochs (run_id, epoch, seconds, lr, task_weights) "
                "VALUES (?, ?, ?, ?, ?)",
                (run_id, epoch, secs, rate, weights_json),
            )
            conn.executemany(
                "INSERT INTO epoch_metrics (run_id, epoch, split, name, value) "
                "VALUES (?, ?, ?, ?, ?)",
                [(run_id, epoch, split, name, value) for split, name, value in rows],
            )

        self._transaction(body, write=True)

    def finish_run(
        self,
        run_id: int,
        *,
        final: Mapping[str, Mapping[str, float]],
        best_epoch: int | None = None,
        train_seconds: float | None = None,
    ) -> None:
        """Mark a run finished and record its final metrics (split -> name -> value),
        replacing any recorded before."""
        run_id = _check_int(run_id, "run_id")
        best = None if best_epoch is None else _check_int(
            best_epoch, f"run {run_id}: best_epoch", minimum=0
        )
        secs = None if train_seconds is None else _check_real(
            train_seconds, f"run {run_id}: train_seconds", finite=True
        )
        rows = _flatten_metrics(final, f"run {run_id}: final")

        def body(conn: sqlite3.Connection) -> None:
            self._require_run(conn, run_id)
            conn.execute(
                "UPDATE runs SET status = 'finished', finished = ?, best_epoch = ?, "
                "train_seconds = ?, message = NULL WHERE id = ?",
                (_now(), best, secs, run_id),
            )
            conn.execute("DELETE FROM final_metrics WHERE run_id = ?", (run_id,))
            conn.executemany(
                "INSERT INTO final_metrics (run_id, split, name, value) VALUES (?, ?, ?, ?)",
                [(run_id, split, name, value) for split, name, value in rows],
            )

        self._transaction(body, write=True)

    def fail_run(self, run_id: int, message: str) -> None:
        """Mark a run failed with ``message`` (e.g. the exception); its epochs are kept."""
        run_id = _check_int(run_id, "run_id")
        if not isinstance(message, str):
            raise TypeError(f"run {run_id}: message must be a str, got {message!r}")

        def body(conn: sqlite3.Connection) -> None:
            self._require_run(conn, run_id)
            conn.execute(
                "UPDATE runs SET status = 'failed', finished = ?, message = ? WHERE id = ?",
                (_now(), message, run_id),
            )

        self._transaction(body, write=True)

    def reset_run(self, run_id: int) -> None:
        """Delete a run's epochs and final metrics (for ``--restart``) and start it afresh:
        status ``'running'``, new ``started`` time, summary fields and message cleared. The run
        keeps its id, key, config and ``created`` time."""
        run_id = _check_int(run_id, "run_id")

        def body(conn: sqlite3.Connection) -> None:
            self._require_run(conn, run_id)
            conn.execute("DELETE FROM epoch_metrics WHERE run_id = ?", (run_id,))
            conn.execute("DELETE FROM epochs WHERE run_id = ?", (run_id,))
            conn.execute("DELETE FROM final_metrics WHERE run_id = ?", (run_id,))
            conn.execute(
                "UPDATE runs SET status = 'running', started = ?, finished = NULL, "
                "best_epoch = NULL, train_seconds = NULL, message = NULL WHERE id = ?",
                (_now(), run_id),
            )

        self._transaction(body, write=True)

    def delete_run(self, run_id: int) -> None:
        """Delete a run and everything recorded for it."""
        run_id = _check_int(run_id, "run_id")

        def body(conn: sqlite3.Connection) -> None:
            self._require_run(conn, run_id)
            conn.execute("DELETE FROM runs WHERE id = ?", (run_id,))

        self._transaction(body, write=True)

    # ------------------------------------------------------------------ reading

    def _read(self, run_id: int, query: Callable[[sqlite3.Connection], _T]) -> _T:
        run_id = _check_int(run_id, "run_id")

        def body(conn: sqlite3.Connection) -> _T:
            self._require_run(conn, run_id)
            return query(conn)

        return self._transaction(body, write=False)

    def _to_run(self, row: Sequence[Any]) -> Run:
        (run_id, key, benchmark, method, config_name, config, seed, status, versions,
         created, started, finished, best_epoch, train_seconds, message) = row
        try:
            config_dict = json.loads(config)
            versions_dict = json.loads(versions)
        except json.JSONDecodeError as exc:
            raise StoreError(f"{self.path}: run {run_id} has corrupt JSON: {exc}") from exc
        return Run(
            id=int(run_id), key=key, benchmark=benchmark, method=method,
            config_name=config_name, config=config_dict, seed=int(seed), status=status,
            versions=versions_dict, created=created, started=started, finished=finished,
            best_epoch=None if best_epoch is None else int(best_epoch),
            train_seconds=None if train_seconds is None else float(train_seconds),
            message=message,
        )

    def runs(
        self,
        benchmark: str | None = None,
        method: str | None = None,
        config_name: str | None = None,
        status: str | None = None,
    ) -> list[Run]:
        """All runs matching the given fields (``None`` matches anything), ordered by id."""
        if status is not None and status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES} or None, got {status!r}")
        filters = {
            "benchmark": benchmark, "method": method, "config_name": config_name,
            "status": status,
        }
        clauses = [f"{name} = ?" for name, value in filters.items() if value is not None]
        params = [value for value in filters.values() if value is not None]
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        sql = f"SELECT {_RUN_COLUMNS} FROM runs{where} ORDER BY id"
        rows = self._transaction(lambda conn: conn.execute(sql, params).fetchall(), write=False)
        return [self._to_run(row) for row in rows]

    def run(self, run_id: int) -> Run:
        """The run with id ``run_id``; :class:`KeyError` naming the id if there is none."""
        row = self._read(
            run_id,
            lambda conn: conn.execute(
                f"SELECT {_RUN_COLUMNS} FROM runs WHERE id = ?", (run_id,)
            ).fetchone(),
        )
        return self._to_run(row)

    def epoch_metrics(self, run_id: int) -> dict[str, dict[str, list[tuple[int, float]]]]:
        """Per-epoch metrics: split -> metric name -> ``[(epoch, value)]`` sorted by epoch."""
        rows = self._read(
            run_id,
            lambda conn: conn.execute(
                "SELECT split, name, epoch, value FROM epoch_metrics WHERE run_id = ? "
                "ORDER BY split, name, epoch",
                (run_id,),
            ).fetchall(),
        )
        result: dict[str, dict[str, list[tuple[int, float]]]] = {}
        for split, name, epoch, value in rows:
            result.setdefault(split, {}).setdefault(name, []).append(
                (int(epoch), _decode_value(value))
            )
        return result

    def final_metrics(self, run_id: int) -> dict[str, dict[str, float]]:
        """Final metrics of a run: split -> metric name -> value (empty if none recorded)."""
        rows = self._read(
            run_id,
            lambda conn: conn.execute(
                "SELECT split, name, value FROM final_metrics WHERE run_id = ? "
                "ORDER BY split, name",
                (run_id,),
            ).fetchall(),
        )
        result: dict[str, dict[str, float]] = {}
        for split, name, value in rows:
            result.setdefault(split, {})[name] = _decode_value(value)
        return result

    def epoch_seconds(self, run_id: int) -> list[tuple[int, float]]:
        """``[(epoch, training seconds)]`` sorted by epoch."""
        rows = self._read(
            run_id,
            lambda conn: conn.execute(
                "SELECT epoch, seconds FROM epochs WHERE run_id = ? ORDER BY epoch", (run_id,)
            ).fetchall(),
        )
        return [(int(epoch), float(seconds)) for epoch, seconds in rows]

    def task_weights(self, run_id: int) -> list[tuple[int, list[float]]]:
        """``[(epoch, mean task weights)]`` sorted by epoch, for epochs that recorded them."""
        rows = self._read(
            run_id,
            lambda conn: conn.execute(
                "SELECT epoch, task_weights FROM epochs WHERE run_id = ? "
                "AND task_weights IS NOT NULL ORDER BY epoch",
                (run_id,),
            ).fetchall(),
        )
        return [(int(epoch), [float(w) for w in json.loads(text)]) for epoch, text in rows]

    def lrs(self, run_id: int) -> list[tuple[int, float]]:
        """``[(epoch, learning rate)]`` sorted by epoch, for epochs that recorded one."""
        rows = self._read(
            run_id,
            lambda conn: conn.execute(
                "SELECT epoch, lr FROM epochs WHERE run_id = ? AND lr IS NOT NULL "
                "ORDER BY epoch",
                (run_id,),
            ).fetchall(),
        )
        return [(int(epoch), float(lr)) for epoch, lr in rows]
