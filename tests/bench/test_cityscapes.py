"""Cityscapes in MTAN's .npy layout: the paper command, methods, resume, loader validation."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from fairmtl.bench import base
from fairmtl.bench.base import DatasetError
from fairmtl.bench.cityscapes import BENCHMARK, write_fixture
from fairmtl.bench.cli import main
from fairmtl.bench.published import published
from fairmtl.bench.runner import train
from fairmtl.bench.segnet import SegNetMTAN
from fairmtl.bench.store import ResultsStore

CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def _registered(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(base._BENCHMARK_MODULES, "cityscapes", "fairmtl.bench.cityscapes")


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_fixture(tmp_path_factory.mktemp("cityscapes"), n_train=4, n_val=3)


def _tiny(root: Path, **extra: object) -> dict[str, object]:
    """The cpu configuration on the fixture at its own size (32x64)."""
    return {"data.root": str(root), "data.resolution": None, "epochs": 1, **extra}


def _finite(values: dict[str, float]) -> bool:
    return bool(values) and all(math.isfinite(v) for v in values.values())


def test_fixture_is_written_in_the_real_layout(tmp_path: Path) -> None:
    root = write_fixture(tmp_path, n_train=2, n_val=1, height=32, width=64)
    assert sorted(p.name for p in (root / "val").iterdir()) == ["depth", "image", "label_7"]
    image = np.load(root / "train/image/1.npy")
    label = np.load(root / "train/label_7/1.npy")
    depth = np.load(root / "train/depth/1.npy")
    assert image.shape == (32, 64, 3) and label.shape == (32, 64) and depth.shape == (32, 64, 1)
    assert {a.dtype for a in (image, label, depth)} == {np.dtype(np.float64)}
    assert set(np.unique(label)) <= set(range(-1, 7)) and (label == -1).any()
    assert (depth == 0).any() and 0 < depth.max() <= 0.1  # inverse depth


def test_paper_command_trains_on_the_fixture(tmp_path: Path) -> None:
    root = write_fixture(tmp_path / "data", n_train=2, n_val=1, height=32, width=64)
    db = tmp_path / "runs.db"
    rc = main(["train", "cityscapes", "--method", BENCHMARK.default_methods[0], "--config",
               "paper", "--set", f"data.root={root}", "--set", "epochs=1", "--db", str(db),
               "--checkpoints", str(tmp_path / "ck"), "--no-progress"])  # fmt: skip
    assert rc == 0
    with ResultsStore(db) as store:
        (run,) = store.runs()
        assert run.status == "finished"
        final = store.final_metrics(run.id)
    assert set(final["test"]) == {"segmentation/miou", "segmentation/pix_acc",
                                  "depth/abs_err", "depth/rel_err"}  # fmt: skip
    assert _finite(final["test"])


def test_paper_configuration_is_the_published_setting() -> None:
    cfg = BENCHMARK.config("paper")
    assert (cfg.epochs, cfg.batch_size, cfg.lr, cfg.select) == (200, 8, 1e-4, "last")
    assert cfg.schedule == {"type": "step", "step_size": 100, "gamma": 0.5}
    model = BENCHMARK.build_model(cfg)
    assert isinstance(model, SegNetMTAN) and len(model.heads) == 2
    assert model.heads[0][-1].out_channels == 7


@pytest.mark.parametrize("index", [0, len(BENCHMARK.default_methods) // 2, -1])
def test_methods_train_a_few_steps(index: int, data_root: Path, tmp_path: Path) -> None:
    method = BENCHMARK.default_methods[index]
    result = train(BENCHMARK, method, "cpu", overrides=_tiny(data_root, batch_size=2),
                   store=tmp_path / "r.db", checkpoints=tmp_path / "ck", progress=False,
                   log=None)  # fmt: skip
    assert _finite(result.final["test"]) and len(result.final["test"]) == 4


def test_an_interrupted_run_resumes(data_root: Path, tmp_path: Path) -> None:
    method = BENCHMARK.default_methods[-1]
    over = _tiny(data_root, epochs=2, batch_size=2)

    def stop(epoch: int, step: int) -> None:
        if epoch == 1 and step == 2:
            raise KeyboardInterrupt

    kw = {"store": tmp_path / "r.db", "checkpoints": tmp_path / "ck", "progress": False, "log": None}
    with pytest.raises(KeyboardInterrupt):
        train(BENCHMARK, method, "cpu", overrides=over, on_step=stop, **kw)
    with ResultsStore(tmp_path / "r.db") as store:
        (run,) = store.runs()
        assert run.status == "running" and [e for e, _ in store.epoch_seconds(run.id)] == [1]
    result = train(BENCHMARK, method, "cpu", overrides=over, **kw)
    with ResultsStore(tmp_path / "r.db") as store:
        (run,) = store.runs()
        assert run.status == "finished" and run.best_epoch == 2
        rows = store.epoch_metrics(run.id)
    assert all([e for e, _ in curve] == [1, 2] for split in rows.values() for curve in split.values())
    assert _finite(result.final["test"])


def test_batches_hold_image_label_and_inverse_depth(data_root: Path) -> None:
    data = BENCHMARK.build_data(BENCHMARK.config("cpu").with_overrides(_tiny(data_root)))
    batch = next(BENCHMARK.batches(data["val"], 3, None, CPU))
    assert len(batch) == 3
    image, label, depth = batch
    assert image.shape == (3, 3, 32, 64) and label.shape == (3, 32, 64) and depth.shape == (3, 1, 32, 64)
    assert label.dtype == torch.int64 and label.max() < 7
    raw = np.load(data_root / "val/depth/2.npy")
    assert torch.allclose(depth[2, 0], torch.from_numpy(raw[..., 0]).float())
    model = BENCHMARK.build_model(BENCHMARK.config("cpu"))
    outputs = model(image)
    losses = BENCHMARK.losses(outputs, batch)
    assert losses.shape == (2,) and bool(torch.isfinite(losses).all())


def test_cpu_configuration_reduces_resolution(data_root: Path) -> None:
    over = {"data.root": str(data_root)}
    data = BENCHMARK.build_data(BENCHMARK.config("cpu").with_overrides(over))
    image, label, depth = next(BENCHMARK.batches(data["train"], 2, None, CPU))
    assert image.shape[-2:] == (64, 128) and label.shape[-2:] == (64, 128)
    assert depth.shape[-2:] == (64, 128) and (depth == 0).any()  # nearest: missing stays 0
    assert set(label.unique().tolist()) <= set(range(-1, 7))


def test_val_score_is_minus_delta_m_against_the_published_stl(data_root: Path) -> None:
    BENCHMARK.build_data(BENCHMARK.config("cpu").with_overrides(_tiny(data_root)))
    stl = published("cityscapes")[0].stl
    assert stl == (74.01, 93.16, 0.0125, 27.77)
    columns = [f"{t}/{s.name}" for t, s in BENCHMARK.metric_columns()]
    assert BENCHMARK.val_score(dict(zip(columns, stl))) == pytest.approx(0.0)
    worse = dict(zip(columns, stl))
    worse["depth/abs_err"] = 0.0125 * 1.2  # +20 % error on one of 4 metrics: Delta m = +5 %
    assert BENCHMARK.val_score(worse) == pytest.approx(-5.0)


def _load(root: Path) -> None:
    data = BENCHMARK.build_data(BENCHMARK.config("cpu").with_overrides(_tiny(root)))
    for split in ("train", "val"):
        for _ in BENCHMARK.batches(data[split], 4, None, CPU):
            pass


def test_malformed_datasets_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"cityscapes dataset folder not found.*label_7"):
        _load(tmp_path / "missing")
    root = write_fixture(tmp_path / "a", n_train=2, n_val=2)
    (root / "train/label_7").rename(root / "train/label")
    with pytest.raises(DatasetError, match=r"train/label_7: folder not found"):
        _load(root)
    (root / "train/label").rename(root / "train/label_7")
    (root / "val/depth/1.npy").rename(root / "val/depth/2.npy")
    with pytest.raises(DatasetError, match=r"val/depth: .*1\.npy is missing"):
        _load(root)
    (root / "val/depth/2.npy").rename(root / "val/depth/1.npy")
    np.save(root / "val/depth/1.npy", np.ones((32, 64, 3)))
    with pytest.raises(DatasetError, match=r"depth/1\.npy: expected an array of shape \(32, 64, 1\)"):
        _load(root)
    np.save(root / "val/depth/1.npy", np.ones((32, 64, 1)))
    label = np.load(root / "train/label_7/0.npy")
    label[0, 3] = 7
    np.save(root / "train/label_7/0.npy", label)
    with pytest.raises(DatasetError, match=r"label_7/0\.npy: label 7 at pixel \(0, 3\) is outside \[0, 7\)"):
        _load(root)
    (root / "train/label_7/0.npy").write_bytes(b"\x93NUMPY garbage")
    with pytest.raises(DatasetError, match=r"label_7/0\.npy: not a readable \.npy file"):
        _load(root)
