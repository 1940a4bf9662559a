"""NYUv2 in MTAN's .npy layout: the paper command, methods, resume, loader validation."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from fairmtl.bench import base
from fairmtl.bench.base import DatasetError
from fairmtl.bench.cli import main
from fairmtl.bench.nyuv2 import BENCHMARK, write_fixture
from fairmtl.bench.published import published
from fairmtl.bench.runner import train
from fairmtl.bench.segnet import SegNetMTAN
from fairmtl.bench.store import ResultsStore

CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def _registered(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(base._BENCHMARK_MODULES, "nyuv2", "fairmtl.bench.nyuv2")


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_fixture(tmp_path_factory.mktemp("nyuv2"), n_train=4, n_val=3)


def _tiny(root: Path, **extra: object) -> dict[str, object]:
    """The cpu configuration on the fixture at its own size (32x64)."""
    return {"data.root": str(root), "data.resolution": None, "epochs": 1, **extra}


def _finite(values: dict[str, float]) -> bool:
    return bool(values) and all(math.isfinite(v) for v in values.values())


def test_fixture_is_written_in_the_real_layout(tmp_path: Path) -> None:
    root = write_fixture(tmp_path, n_train=2, n_val=1, height=32, width=48)
    assert sorted(p.name for p in (root / "train").iterdir()) == ["depth", "image", "label", "normal"]
    assert sorted(p.name for p in (root / "train" / "image").iterdir()) == ["0.npy", "1.npy"]
    image = np.load(root / "train/image/0.npy")
    label = np.load(root / "train/label/0.npy")
    depth = np.load(root / "train/depth/0.npy")
    normal = np.load(root / "train/normal/0.npy")
    assert image.shape == (32, 48, 3) and label.shape == (32, 48)
    assert depth.shape == (32, 48, 1) and normal.shape == (32, 48, 3)
    assert {a.dtype for a in (image, label, depth, normal)} == {np.dtype(np.float64)}
    assert set(np.unique(label)) <= set(range(-1, 13)) and (label == -1).any()
    assert (depth == 0).any() and (depth > 0).any()
    norms = np.linalg.norm(normal, axis=-1)
    assert np.allclose(norms[norms > 0], 1.0) and (norms == 0).any()


def test_paper_command_trains_on_the_fixture(tmp_path: Path) -> None:
    root = write_fixture(tmp_path / "data", n_train=2, n_val=1, height=32, width=32)
    db = tmp_path / "runs.db"
    rc = main(["train", "nyuv2", "--method", BENCHMARK.default_methods[0], "--config", "paper",
               "--set", f"data.root={root}", "--set", "epochs=1", "--db", str(db),
               "--checkpoints", str(tmp_path / "ck"), "--no-progress"])  # fmt: skip
    assert rc == 0
    with ResultsStore(db) as store:
        (run,) = store.runs()
        assert run.status == "finished" and run.best_epoch == 1
        final = store.final_metrics(run.id)
    assert set(final["test"]) == {f"{t}/{s.name}" for t, s in BENCHMARK.metric_columns()}
    assert _finite(final["test"]) and final["test"] == final["val"]  # val folder = test set
    assert 0.0 <= final["test"]["segmentation/pix_acc"] <= 100.0


def test_paper_configuration_is_the_published_setting() -> None:
    cfg = BENCHMARK.config("paper")
    assert (cfg.epochs, cfg.batch_size, cfg.lr, cfg.optimizer) == (200, 2, 1e-4, "adam")
    assert cfg.schedule == {"type": "step", "step_size": 100, "gamma": 0.5}
    assert cfg.select == "last"
    model = BENCHMARK.build_model(cfg)
    assert isinstance(model, SegNetMTAN) and model.backbone.filters[-1] == 512
    igb = BENCHMARK.config("igb")
    assert (igb.epochs, igb.select, igb.data["val_size"], igb.data["model"]) == (500, "best", 197, "segnet")


@pytest.mark.parametrize("index", [0, len(BENCHMARK.default_methods) // 2, -1])
def test_methods_train_a_few_steps(index: int, data_root: Path, tmp_path: Path) -> None:
    method = BENCHMARK.default_methods[index]
    with ResultsStore(tmp_path / "r.db") as store:
        result = train(BENCHMARK, method, "cpu", overrides=_tiny(data_root, batch_size=2),
                       store=store, checkpoints=tmp_path / "ck", progress=False, log=None)  # fmt: skip
        losses = store.epoch_metrics(result.run_id)["train"]
    assert _finite(result.final["test"])
    assert len(losses) == 3 and all(math.isfinite(v) for c in losses.values() for _, v in c)


def test_an_interrupted_run_resumes_to_the_same_result(data_root: Path, tmp_path: Path) -> None:
    method = BENCHMARK.default_methods[0]
    over = _tiny(data_root, epochs=2, batch_size=2)
    kw = {"progress": False, "log": None}

    def stop(epoch: int, step: int) -> None:
        if epoch == 1 and step == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(BENCHMARK, method, "cpu", overrides=over, store=tmp_path / "a.db",
              checkpoints=tmp_path / "ck_a", on_step=stop, **kw)  # fmt: skip
    resumed = train(BENCHMARK, method, "cpu", overrides=over, store=tmp_path / "a.db",
                    checkpoints=tmp_path / "ck_a", **kw)  # fmt: skip
    clean = train(BENCHMARK, method, "cpu", overrides=over, store=tmp_path / "b.db",
                  checkpoints=tmp_path / "ck_b", **kw)  # fmt: skip
    with ResultsStore(tmp_path / "a.db") as store:
        (run,) = store.runs()
        assert run.status == "finished"
        rows = store.epoch_metrics(run.id)
    for split in ("train", "val", "test"):
        for curve in rows[split].values():
            assert [e for e, _ in curve] == [1, 2]
    assert resumed.final == clean.final  # augmentation and order come from the seed


def test_batches_shapes_order_and_augmentation(data_root: Path) -> None:
    cfg = BENCHMARK.config("cpu").with_overrides(_tiny(data_root))
    data = BENCHMARK.build_data(cfg)
    assert data["val"] is data["test"] and len(data["train"]) == 4 and len(data["val"]) == 3
    image, label, depth, normal = next(BENCHMARK.batches(data["val"], 2, None, CPU))
    assert image.shape == (2, 3, 32, 64) and image.dtype == torch.float32
    assert label.shape == (2, 32, 64) and label.dtype == torch.int64
    assert depth.shape == (2, 1, 32, 64) and normal.shape == (2, 3, 32, 64)
    raw = np.load(data_root / "val/image/1.npy")
    assert torch.allclose(image[1], torch.from_numpy(raw).permute(2, 0, 1).float())
    assert BENCHMARK.num_batches(data["val"], 2) == 2
    train_batches = [list(BENCHMARK.batches(data["train"], 4, torch.Generator().manual_seed(s), CPU))
                     for s in (0, 0, 1)]  # fmt: skip
    assert torch.equal(train_batches[0][0][0], train_batches[1][0][0])
    assert not torch.equal(train_batches[0][0][0], train_batches[2][0][0])
    plain = next(BENCHMARK.batches(data["train"], 4, None, CPU))
    assert not torch.equal(train_batches[0][0][0].sum(0), plain[0].sum(0))  # augmented


def test_reduced_resolution_subsets_and_a_validation_split(data_root: Path) -> None:
    over = {"data.root": str(data_root), "data.resolution": [32, 32], "data.max_train": 3,
            "data.val_size": 1}  # fmt: skip
    data = BENCHMARK.build_data(BENCHMARK.config("cpu").with_overrides(over))
    assert len(data["train"]) == 3
    assert sorted(data["val"].indices + data["test"].indices) == [0, 1, 2]
    assert len(data["val"]) == 1
    image, label, depth, normal = next(BENCHMARK.batches(data["train"], 3, None, CPU))
    assert image.shape == (3, 3, 32, 32) and label.shape == (3, 32, 32)
    assert depth.shape == (3, 1, 32, 32) and (depth == 0).any() and depth.max() <= 10.0
    assert set(label.unique().tolist()) <= set(range(-1, 13))
    norms = normal.norm(dim=1)
    assert torch.allclose(norms[norms > 0], torch.ones(()), atol=1e-5)  # nearest keeps unit normals


def test_val_score_is_minus_delta_m_against_the_published_stl(data_root: Path) -> None:
    BENCHMARK.build_data(BENCHMARK.config("cpu").with_overrides(_tiny(data_root)))
    stl = published("nyuv2")[0].stl
    assert stl is not None
    columns = [f"{t}/{s.name}" for t, s in BENCHMARK.metric_columns()]
    assert BENCHMARK.val_score(dict(zip(columns, stl))) == pytest.approx(0.0)
    better = dict(zip(columns, stl))
    better["segmentation/miou"] *= 1.09  # +9 % on one of 9 metrics: Delta m = -1 %
    assert BENCHMARK.val_score(better) == pytest.approx(1.0)


def test_unknown_or_bad_options_are_rejected(data_root: Path) -> None:
    with pytest.raises(ValueError, match="unknown data option"):
        BENCHMARK.build_data(BENCHMARK.config("cpu").with_overrides({"data.resolutoin": [32, 32]}))
    with pytest.raises(ValueError, match="resolution"):
        BENCHMARK.build_data(BENCHMARK.config("cpu").with_overrides({"data.resolution": [16, 16]}))


# ---------------------------------------------------------------------------------------
# loader validation: every malformed dataset names the file and what was expected
# ---------------------------------------------------------------------------------------


def _load(root: Path) -> dict:
    cfg = BENCHMARK.config("cpu").with_overrides(_tiny(root))
    data = BENCHMARK.build_data(cfg)
    for split in ("train", "val"):
        for _ in BENCHMARK.batches(data[split], 4, None, CPU):
            pass
    return data


def _fixture(tmp_path: Path) -> Path:
    return write_fixture(tmp_path / "d", n_train=3, n_val=2)


def test_missing_root_and_folders(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"nowhere: nyuv2 dataset folder not found.*train,val"):
        _load(tmp_path / "nowhere")
    root = _fixture(tmp_path)
    for f in (root / "val" / "normal").iterdir():
        f.unlink()
    (root / "val" / "normal").rmdir()
    with pytest.raises(DatasetError, match=r"val/normal: folder not found.*\(H, W, 3\)"):
        _load(root)


def test_gaps_and_mismatched_indices(tmp_path: Path) -> None:
    root = _fixture(tmp_path)
    (root / "train/label/1.npy").rename(root / "train/label/7.npy")
    with pytest.raises(DatasetError, match=r"train/label: .*1\.npy is missing"):
        _load(root)
    (root / "train/label/7.npy").rename(root / "train/label/1.npy")
    (root / "train/depth/2.npy").unlink()
    with pytest.raises(DatasetError, match=r"depth/ holds 2 files but image/ holds 3"):
        _load(root)
    np.save(root / "train/depth/2.npy", np.ones((32, 64, 1)))
    np.save(root / "train/depth/02.npy", np.ones((32, 64, 1)))
    with pytest.raises(DatasetError, match=r"02\.npy: unexpected file name"):
        _load(root)


def test_wrong_shapes_and_dtypes(tmp_path: Path) -> None:
    root = _fixture(tmp_path)
    good = np.load(root / "train/image/1.npy")
    np.save(root / "train/image/1.npy", good[..., 0])
    with pytest.raises(DatasetError, match=r"image/1\.npy: expected an array of shape \(32, 64, 3\)"):
        _load(root)
    np.save(root / "train/image/1.npy", good)
    np.save(root / "val/depth/0.npy", np.ones((32, 64)))
    with pytest.raises(DatasetError, match=r"val/depth/0\.npy: .*\(32, 64, 1\).*got shape \(32, 64\)"):
        _load(root)
    np.save(root / "val/depth/0.npy", np.ones((32, 64, 1), dtype=np.int32))
    with pytest.raises(DatasetError, match=r"depth/0\.npy: .*floating.*int32"):
        _load(root)


def test_labels_out_of_range_or_not_integers(tmp_path: Path) -> None:
    root = _fixture(tmp_path)
    label = np.load(root / "val/label/1.npy")
    label[5, 7] = 13
    np.save(root / "val/label/1.npy", label)
    with pytest.raises(DatasetError, match=r"label/1\.npy: label 13 at pixel \(5, 7\) is outside \[0, 13\)"):
        _load(root)
    label[5, 7] = 2.5
    np.save(root / "val/label/1.npy", label)
    with pytest.raises(DatasetError, match=r"label 2\.5 at pixel \(5, 7\) is not an integer"):
        _load(root)
    np.save(root / "val/label/1.npy", np.where(label == 2.5, -1, label).astype(np.int16))
    _load(root)  # integer labels are accepted too


def test_unreadable_and_non_finite_files(tmp_path: Path) -> None:
    root = _fixture(tmp_path)
    (root / "train/normal/0.npy").write_bytes(b"not a numpy file")
    with pytest.raises(DatasetError, match=r"normal/0\.npy: not a readable \.npy file"):
        _load(root)
    root = write_fixture(tmp_path / "e", n_train=3, n_val=2)
    depth = np.load(root / "train/depth/2.npy")
    depth[0, 0, 0] = np.nan
    np.save(root / "train/depth/2.npy", depth)
    with pytest.raises(DatasetError, match=r"depth/2\.npy: depth holds NaN"):
        _load(root)
