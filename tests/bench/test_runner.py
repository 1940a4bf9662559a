"""The runner trains any registered method (and any composition) on a real benchmark."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import pytest

import fairmtl
from fairmtl._registry import lookup
from fairmtl.aggregators.base import Aggregator
from fairmtl.bench.runner import train
from fairmtl.bench.store import ResultsStore
from fairmtl.weighting.base import Weighting

pytest.importorskip("mlxtend")

TINY = {"epochs": 2, "batch_size": 64, "threads": 1, "data.train_pairs": 192,
        "data.val_pairs": 64, "data.test_pairs": 64}  # fmt: skip
METHODS = [n for n in fairmtl.available() if issubclass(lookup(n), (Aggregator, Weighting))]


@pytest.mark.parametrize("method", METHODS)
def test_every_method_trains_and_is_recorded(method: str, tmp_path: Path) -> None:
    with ResultsStore(tmp_path / "r.db") as store:
        result = train("multimnist", method, "cpu", overrides=TINY, store=store,
                       checkpoints=tmp_path / "ck", progress=False, log=None)  # fmt: skip
        run = store.run(result.run_id)
        assert run.status == "finished" and run.best_epoch == result.best_epoch
        final = store.final_metrics(run.id)
        assert set(final["test"]) == {"left/acc", "right/acc"}
        assert all(0 <= v <= 100 for v in final["test"].values())
        weights = store.task_weights(run.id)
        assert [e for e, _ in weights] == [1, 2]
        assert all(len(w) == 2 and all(math.isfinite(x) for x in w) for _, w in weights)
        train_losses = store.epoch_metrics(run.id)["train"]
        assert all(math.isfinite(v) for curve in train_losses.values() for _, v in curve)


def test_features_mode_for_any_method(tmp_path: Path) -> None:
    method = next(m for m in METHODS if issubclass(lookup(m), Aggregator)
                  and not lookup(m).features_only)  # fmt: skip
    shared = train("multimnist", method, "cpu", overrides=TINY, store=tmp_path / "r.db",
                   checkpoints=tmp_path / "ck", progress=False, log=None)  # fmt: skip
    feats = train("multimnist", method, "cpu", overrides={**TINY, "features": True},
                  store=tmp_path / "r.db", checkpoints=tmp_path / "ck", progress=False, log=None)  # fmt: skip
    assert feats.key != shared.key
    with ResultsStore(tmp_path / "r.db") as store:  # another gradient, another trajectory
        a = store.epoch_metrics(shared.run_id)["train"]["left/loss"]
        b = store.epoch_metrics(feats.run_id)["train"]["left/loss"]
    assert a != b


def test_a_diverging_run_is_marked_failed_and_keeps_its_last_checkpoint(tmp_path: Path) -> None:
    method = METHODS[0]
    store = ResultsStore(tmp_path / "r.db")
    with pytest.raises(fairmtl.InvalidLossError, match="not finite"):
        train("multimnist", method, "cpu", overrides={**TINY, "lr": 1e30}, store=store,
              checkpoints=tmp_path / "ck", progress=False, log=None)  # fmt: skip
    (run,) = store.runs()
    assert run.status == "failed" and "not finite" in (run.message or "")


@pytest.mark.parametrize(
    ("schedule", "expected"),
    [
        ({"type": "step", "step_size": 1, "gamma": 0.5}, [0.5e-3, 0.25e-3]),
        ({"type": "cosine"}, [0.5e-3, 0.0]),
    ],
)
def test_lr_schedules_are_applied_and_recorded(schedule: dict, expected: list, tmp_path: Path) -> None:
    with ResultsStore(tmp_path / "r.db") as store:
        result = train("multimnist", "stl:0", "cpu", overrides={**TINY, "schedule": schedule},
                       store=store, checkpoints=tmp_path / "ck", progress=False, log=None)  # fmt: skip
        lrs = [lr for _, lr in store.lrs(result.run_id)]
    assert lrs == pytest.approx(expected, abs=1e-12)


def test_plateau_schedule_steps_on_the_validation_score(tmp_path: Path) -> None:
    sched = {"type": "plateau", "factor": 0.5, "patience": 0}
    with ResultsStore(tmp_path / "r.db") as store:
        result = train("multimnist", "stl:0", "cpu",
                       overrides={**TINY, "epochs": 4, "lr": 1e-6, "schedule": sched},
                       store=store, checkpoints=tmp_path / "ck", progress=False, log=None)  # fmt: skip
        lrs = [lr for _, lr in store.lrs(result.run_id)]
    # lr 1e-6 hardly moves the validation score: the LR halves after every epoch that
    # does not beat the best (the first epoch sets the best).
    assert lrs[-1] < lrs[0] and all(b <= a for a, b in itertools.pairwise(lrs))


def test_gradient_clipping_changes_the_trajectory(tmp_path: Path) -> None:
    kw = {"store": tmp_path / "r.db", "checkpoints": tmp_path / "ck", "progress": False, "log": None}
    free = train("multimnist", "stl:0", "cpu", overrides=TINY, **kw)
    clipped = train("multimnist", "stl:0", "cpu", overrides={**TINY, "clip_grad_norm": 1e-4}, **kw)
    with ResultsStore(tmp_path / "r.db") as store:
        a = store.epoch_metrics(free.run_id)["train"]["left/loss"]
        b = store.epoch_metrics(clipped.run_id)["train"]["left/loss"]
    assert a[-1][1] < b[-1][1]  # tiny steps: the clipped run has barely moved


def test_single_task_baselines_are_selected_on_their_own_task(tmp_path: Path) -> None:
    """An stl:K run's best epoch follows task K's validation metric, not the untrained heads."""
    with ResultsStore(tmp_path / "r.db") as store:
        result = train("multimnist", "stl:1", "cpu", overrides={**TINY, "epochs": 3, "select": "best"},
                       store=store, checkpoints=tmp_path / "ck", progress=False, log=None)  # fmt: skip
        curve = store.epoch_metrics(result.run_id)["val"]["right/acc"]
    best = max(curve, key=lambda ev: (ev[1], -ev[0]))
    assert result.best_epoch == best[0]
