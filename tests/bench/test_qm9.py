"""QM9 (11 targets, PyG's QM9 + NNConv model): loader, validation, model, training, resume."""

from __future__ import annotations

import importlib.util
import math
import shutil
import sys
from pathlib import Path

import pytest
import torch

from fairmtl.bench import base
from fairmtl.bench.base import DatasetError, MissingExtraError
from fairmtl.bench.cli import main
from fairmtl.bench.published import QM9_STL_SPEC, QM9_TARGETS
from fairmtl.bench.qm9 import (
    BENCHMARK,
    MEV_TASKS,
    TARGET_COLUMNS,
    Complete,
    Molecules,
    QM9Net,
    check_layout,
    collate_complete,
    load_qm9,
    qm9_transform,
    split_indices,
    write_fixture,
)
from fairmtl.bench.runner import train
from fairmtl.bench.store import ResultsStore

pytest.importorskip("torch_geometric")

HAS_RDKIT = importlib.util.find_spec("rdkit") is not None
needs_v3 = pytest.mark.skipif(HAS_RDKIT, reason="with rdkit, PyG reads the SDF files, not qm9_v3.pt")
CPU = torch.device("cpu")
# 30 molecules: 6 test, 6 val, 18 train; one training batch per epoch keeps runs short.
SMALL = {"data.val_size": 0.2, "data.test_size": 0.2, "batch_size": 18, "eval_batch_size": 16}
# The method and resume tests also narrow the network (the paper's width is trained by the
# command-line test): 11 per-task backward passes through a 64x64 edge network are slow.
NARROW = {"data.hidden": 16}


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_fixture(tmp_path_factory.mktemp("qm9"), 30, seed=0)


@pytest.fixture
def registered(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(base._BENCHMARK_MODULES, "qm9", "fairmtl.bench.qm9")


def _overrides(root: Path, **extra: object) -> dict[str, object]:
    return {"data.root": str(root), **SMALL, **extra}


def _config(root: Path, **extra: object):
    return BENCHMARK.config("paper").with_overrides(_overrides(root, **extra))


# ----------------------------------------------------------------------------------------
# training through the command line and the runner
# ----------------------------------------------------------------------------------------


def test_paper_command_trains_on_the_fixture(root: Path, tmp_path: Path, registered: None) -> None:
    method = BENCHMARK.default_methods[-3]
    db = tmp_path / "r.db"
    code = main([
        "train", "qm9", "--method", method, "--config", "paper",
        "--set", f"data.root={root}", "--set", "data.val_size=0.2", "--set", "data.test_size=0.2",
        "--set", "epochs=1", "--set", "batch_size=18",
        "--db", str(db), "--checkpoints", str(tmp_path / "ck"), "--no-progress",
    ])  # fmt: skip
    assert code == 0
    with ResultsStore(db) as store:
        (run,) = store.runs()
        assert run.status == "finished" and run.best_epoch == 1 and run.method == method
        assert run.config["epochs"] == 1 and run.config["lr"] == 1e-3
        assert run.config["schedule"]["type"] == "plateau" and run.config["select"] == "best"
        final = store.final_metrics(run.id)
    expected = {f"{t}/mae" for t in QM9_TARGETS}
    assert set(final["val"]) == expected and set(final["test"]) == expected
    assert all(math.isfinite(v) and v > 0 for v in final["test"].values())


@pytest.mark.parametrize("index", [0, 6, 10])  # positions in default_methods, not names
def test_methods_train_with_finite_metrics(root: Path, tmp_path: Path, index: int) -> None:
    method = BENCHMARK.default_methods[index]
    with ResultsStore(tmp_path / "r.db") as store:
        result = train(BENCHMARK, method, "paper", overrides=_overrides(root, epochs=1, **NARROW),
                       store=store, checkpoints=tmp_path / "ck", progress=False, log=None)  # fmt: skip
        run = store.run(result.run_id)
        assert run.status == "finished"
        metrics = store.epoch_metrics(run.id)
        weights = store.task_weights(run.id)
    assert [e for e, _ in metrics["train"]["mu/loss"]] == [1]
    assert all(math.isfinite(v) for s in ("train", "val", "test") for c in metrics[s].values()
               for _, v in c)  # fmt: skip
    assert len(weights) == 1 and len(weights[0][1]) == 11
    assert all(math.isfinite(w) for w in weights[0][1])


def test_an_interrupted_run_resumes_from_its_checkpoint(root: Path, tmp_path: Path) -> None:
    method = BENCHMARK.default_methods[0]
    kw = {"overrides": _overrides(root, epochs=2, **NARROW), "checkpoints": tmp_path / "ck",
          "progress": False}  # fmt: skip

    def stop_in_second_epoch(epoch: int, step: int) -> None:
        if epoch == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(BENCHMARK, method, "paper", store=tmp_path / "r.db", log=None,
              on_step=stop_in_second_epoch, **kw)  # fmt: skip
    messages: list[str] = []
    resumed = train(BENCHMARK, method, "paper", store=tmp_path / "r.db", log=messages.append, **kw)
    assert any("resuming after epoch 1" in m for m in messages)
    with ResultsStore(tmp_path / "r.db") as store:
        (run,) = store.runs()
        assert run.status == "finished"
        curves = store.epoch_metrics(run.id)
        assert all([e for e, _ in curve] == [1, 2] for split in curves.values()
                   for curve in split.values())  # fmt: skip
    # The resumed run ends exactly where an uninterrupted one does.
    clean = train(BENCHMARK, method, "paper", store=tmp_path / "clean.db",
                  log=None, **{**kw, "checkpoints": tmp_path / "ck2"})  # fmt: skip
    assert resumed.final == clean.final


# ----------------------------------------------------------------------------------------
# data: fixture format, splits, standardisation, metrics
# ----------------------------------------------------------------------------------------


def test_fixture_is_in_pyg_raw_format(root: Path) -> None:
    records = torch.load(root / "raw" / "qm9_v3.pt")
    assert isinstance(records, list) and len(records) == 30
    rec = records[0]
    assert list(rec) == ["x", "z", "pos", "edge_index", "smiles", "edge_attr", "y", "name", "idx"]
    n, e = rec["x"].shape[0], rec["edge_index"].shape[1]
    assert rec["x"].dtype == torch.float32 and rec["x"].shape == (n, 11)
    assert rec["z"].dtype == torch.long and rec["pos"].shape == (n, 3)
    assert rec["edge_attr"].shape == (e, 4) and bool((rec["edge_attr"].sum(1) == 1).all())
    assert rec["y"].dtype == torch.float32 and rec["y"].shape == (1, 19)
    key = rec["edge_index"][0] * n + rec["edge_index"][1]
    assert torch.equal(key, key.sort().values)  # PyG's edge order
    # The SDF triplet: one more molecule, listed as uncharacterized and left out of qm9_v3.pt.
    lines = (root / "raw" / "gdb9.sdf.csv").read_text().split("\n")[1:-1]
    assert len(lines) == 31 and (root / "raw" / "gdb9.sdf").read_text().count("$$$$") == 31
    skip = [int(x.split()[0]) - 1 for x in
            (root / "raw" / "uncharacterized.txt").read_text().split("\n")[9:-2]]  # fmt: skip
    assert skip == [2]
    assert [r["idx"] for r in records[:4]] == [0, 1, 3, 4]
    # y is the CSV row converted as PyG does: A, B, C moved last, Hartree -> eV.
    row = [float(v) for v in lines[3].split(",")[1:20]]
    assert records[2]["y"][0, 2].item() == pytest.approx(row[5] * 27.211386246, rel=1e-6)
    assert records[2]["y"][0, 16:].tolist() == pytest.approx(row[:3], rel=1e-6)


@pytest.mark.skipif(not HAS_RDKIT, reason="rdkit not installed")
def test_sdf_files_process_to_the_same_molecules(root: Path, tmp_path: Path) -> None:
    shutil.copytree(root / "raw", tmp_path / "raw")
    dataset, _ = load_qm9(tmp_path)  # with rdkit, PyG reads gdb9.sdf / .csv / uncharacterized.txt
    records = torch.load(root / "raw" / "qm9_v3.pt")
    assert len(dataset) == len(records)
    for i, rec in enumerate(records):
        data = dataset.get(i)
        for key in ("x", "z", "pos", "edge_index", "edge_attr", "y"):
            assert torch.equal(getattr(data, key), rec[key]), (i, key)


def test_splits_are_disjoint_fixed_by_the_data_seed_and_sized() -> None:
    a = split_indices(100, 10, 20, data_seed=0)
    b = split_indices(100, 10, 20, data_seed=0)
    c = split_indices(100, 10, 20, data_seed=1)
    assert [len(a[s]) for s in ("test", "val", "train")] == [20, 10, 70]
    assert all(torch.equal(a[s], b[s]) for s in a) and not torch.equal(a["train"], c["train"])
    assert sorted(torch.cat(list(a.values())).tolist()) == list(range(100))
    f = split_indices(100, 0.1, 0.25, data_seed=0, max_molecules=40)
    assert [len(f[s]) for s in ("test", "val", "train")] == [10, 4, 26]
    with pytest.raises(ValueError, match="max_molecules"):
        split_indices(100, 1, 1, data_seed=0, max_molecules=2)
    with pytest.raises(TypeError, match="val_size"):
        split_indices(100, "10", 1, data_seed=0)


@pytest.mark.parametrize("standardise", ["train", "all"])
def test_targets_are_standardised_and_metrics_in_original_units(root: Path, standardise: str) -> None:
    data = BENCHMARK.build_data(_config(root, **{"data.standardise": standardise}))
    dataset, _ = load_qm9(root)
    y = dataset._data.y[:, list(TARGET_COLUMNS)]
    basis = data["train"].index if standardise == "train" else torch.arange(len(dataset))
    mean, std = y[basis].mean(0), y[basis].std(0)
    for split in data.values():
        assert torch.allclose(split.y, (y[split.index] - mean) / std, atol=1e-5)
    if standardise == "train":
        assert torch.allclose(data["train"].y.mean(0), torch.zeros(11), atol=1e-5)
    # A prediction one standardised unit off: MAE = std in PyG units, x1000 (meV) where due.
    metrics = BENCHMARK.new_metrics()
    batch = next(BENCHMARK.batches(data["val"], 100, None, CPU))
    outputs = [(batch[1][:, k] + 1.0)[:, None] for k in range(11)]
    BENCHMARK.update_metrics(metrics, outputs, batch)
    got = [m.compute()["mae"] for m in metrics]
    expected = [float(std[k]) * (1000.0 if k in MEV_TASKS else 1.0) for k in range(11)]
    assert got == pytest.approx(expected, rel=1e-4)
    assert MEV_TASKS == (2, 3, 5, 6, 7, 8, 9)


def test_batches_are_complete_graphs_with_distances(root: Path) -> None:
    data = BENCHMARK.build_data(_config(root))
    split = data["val"]
    batches = list(BENCHMARK.batches(split, 4, None, CPU))
    assert [b[1].shape for b in batches] == [(4, 11), (2, 11)]
    assert BENCHMARK.num_batches(split, 4) == 2
    graph = batches[0][0]
    sizes = torch.bincount(graph.batch)
    edges = graph.edge_index.shape[1]
    assert graph.num_graphs == 4 and graph.edge_attr.shape == (edges, 5)
    assert edges == int((sizes * (sizes - 1)).sum())
    row, col = graph.edge_index
    assert bool((row != col).all())
    dist = (graph.pos[row] - graph.pos[col]).norm(dim=1)
    assert torch.allclose(graph.edge_attr[:, 4], dist, atol=1e-6)
    # Shuffled order comes from the generator only.
    gen = lambda: torch.Generator().manual_seed(3)
    a = [b[1] for b in BENCHMARK.batches(data["train"], 5, gen(), CPU)]
    b = [b[1] for b in BENCHMARK.batches(data["train"], 5, gen(), CPU)]
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not torch.equal(torch.cat(a), data["train"].y)


def test_batched_graphs_equal_the_reference_per_molecule_transform(root: Path) -> None:
    from torch_geometric.data import Batch

    dataset, _ = load_qm9(root)
    ids = torch.tensor([7, 0, 29, 3, 3, 12])
    graph = collate_complete(Molecules.from_dataset(dataset), ids)
    transform = qm9_transform()  # Complete + Distance(norm=False), one molecule at a time
    ref = Batch.from_data_list([transform(dataset[int(i)]) for i in ids])
    for key in ("x", "pos", "edge_index", "edge_attr", "batch"):
        assert torch.equal(getattr(graph, key), getattr(ref, key)), key
    assert graph.num_graphs == ref.num_graphs == 6
    assert int(graph.edge_attr[:, :4].sum()) == int(ref.edge_attr[:, :4].sum()) > 0  # bonds kept


def test_complete_keeps_bonds_and_zero_fills_new_edges() -> None:
    from torch_geometric.data import Data

    attr = torch.tensor([[1.0, 0, 0, 0], [1.0, 0, 0, 0], [0, 1.0, 0, 0], [0, 1.0, 0, 0]])
    data = Data(x=torch.zeros(3, 11), edge_index=torch.tensor([[0, 1, 1, 2], [1, 0, 2, 1]]),
                edge_attr=attr)  # fmt: skip
    out = Complete()(data)
    assert out.edge_index.tolist() == [[0, 0, 1, 1, 2, 2], [1, 2, 0, 2, 0, 1]]
    assert out.edge_attr.tolist() == [[1, 0, 0, 0], [0, 0, 0, 0], [1, 0, 0, 0],
                                      [0, 1, 0, 0], [0, 0, 0, 0], [0, 1, 0, 0]]  # fmt: skip
    assert data.edge_index.shape == (2, 4)  # the input is left alone


def test_val_score_is_minus_delta_m_against_stl() -> None:
    val = {f"{t}/mae": v for t, v in zip(QM9_TARGETS, QM9_STL_SPEC)}
    assert BENCHMARK.val_score(val) == pytest.approx(0.0, abs=1e-12)
    doubled = {k: 2 * v for k, v in val.items()}
    assert BENCHMARK.val_score(doubled) == pytest.approx(-100.0)
    assert BENCHMARK.val_score({**val, "mu/mae": math.nan}) == -math.inf


# ----------------------------------------------------------------------------------------
# model
# ----------------------------------------------------------------------------------------


def test_model_shapes_and_parameter_split(root: Path) -> None:
    data = BENCHMARK.build_data(_config(root))
    graph, y = next(BENCHMARK.batches(data["val"], 5, None, CPU))
    model = BENCHMARK.build_model(_config(root))
    assert isinstance(model, QM9Net)
    out = model(graph)
    assert len(out) == 11 and all(o.shape == (5, 1) for o in out)
    assert model.represent(graph).shape == (5, 64)
    losses = BENCHMARK.losses(out, (graph, y))
    assert losses.shape == (11,) and bool(torch.isfinite(losses).all())
    shared = {id(p) for p in model.shared_parameters()}
    heads = {id(p) for p in model.task_parameters()}
    assert shared and heads and not (shared & heads)
    assert shared | heads == {id(p) for p in model.parameters()}
    assert [p.shape for p in model.task_parameters(3)] == [(1, 64), (1,)]
    assert model.last_shared_layer() is model.encoder.lin1
    edge_net_out = model.encoder.conv.nn[-1]
    assert (edge_net_out.in_features, edge_net_out.out_features) == (128, 64 * 64)
    small = BENCHMARK.build_model(_config(root, **{"data.hidden": 8}))
    assert small.represent(graph).shape == (5, 8)


# ----------------------------------------------------------------------------------------
# invalid data
# ----------------------------------------------------------------------------------------


def _bad_root(tmp_path: Path, edit) -> Path:
    """A fixture whose qm9_v3.pt records were changed by ``edit(records)``."""
    bad = write_fixture(tmp_path / "bad", 12, seed=1, sdf=False)
    records = torch.load(bad / "raw" / "qm9_v3.pt")
    edit(records)
    torch.save(records, bad / "raw" / "qm9_v3.pt")
    return bad


def test_missing_folder_or_files_never_download(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch_geometric.datasets.qm9 as pyg_qm9

    def no_download(*args: object, **kwargs: object) -> None:
        raise AssertionError("a download was attempted")

    monkeypatch.setattr(pyg_qm9, "download_url", no_download)
    with pytest.raises(DatasetError, match="does not exist"):
        load_qm9(tmp_path / "nowhere")
    (tmp_path / "empty" / "raw").mkdir(parents=True)
    expected = "gdb9.sdf" if HAS_RDKIT else "qm9_v3.pt"
    with pytest.raises(DatasetError, match=rf"raw file\(s\) missing: .*{expected}.*never downloads"):
        load_qm9(tmp_path / "empty")
    with pytest.raises(DatasetError, match="does not exist"):
        BENCHMARK.build_data(_config(tmp_path / "nowhere"))


@needs_v3
def test_sdf_files_without_rdkit_are_explained(root: Path, tmp_path: Path) -> None:
    (tmp_path / "raw").mkdir()
    for name in ("gdb9.sdf", "gdb9.sdf.csv", "uncharacterized.txt"):
        shutil.copy(root / "raw" / name, tmp_path / "raw" / name)
    with pytest.raises(DatasetError, match="only when rdkit is installed"):
        check_layout(tmp_path)


def test_bad_options_are_refused(root: Path) -> None:
    with pytest.raises(ValueError, match="unknown QM9 data option"):
        BENCHMARK.build_data(_config(root, **{"data.val_pairs": 3}))
    with pytest.raises(ValueError, match="standardise"):
        BENCHMARK.build_data(_config(root, **{"data.standardise": "test"}))
    with pytest.raises(ValueError, match="hidden"):
        BENCHMARK.build_model(_config(root, **{"data.hidden": 0}))


def test_too_few_molecules_for_the_splits(root: Path) -> None:
    with pytest.raises(DatasetError, match=r"30 molecules.*need 30"):
        BENCHMARK.build_data(_config(root, **{"data.val_size": 15, "data.test_size": 15}))
    with pytest.raises(DatasetError, match="30 molecules"):  # the paper's 10k + 10k
        BENCHMARK.build_data(BENCHMARK.config("paper").with_overrides({"data.root": str(root)}))


@needs_v3
def test_non_finite_target_is_reported(tmp_path: Path) -> None:
    def edit(records: list) -> None:
        records[4]["y"][0, 12] = float("nan")  # PyG column 12 = U0 (atomization)

    bad = _bad_root(tmp_path, edit)
    with pytest.raises(DatasetError, match=r"qm9_v3\.pt.*target u0 .*molecule 4 \(gdb_5\).*nan"):
        load_qm9(bad)


@needs_v3
@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda r: r[0].update(x=r[0]["x"][:, :10]), r"molecule 0: x must have shape \(\d+, 11\)"),
        (lambda r: r[1].update(edge_attr=r[1]["edge_attr"][:, :3]), r"molecule 1: edge_attr must"),
        (lambda r: r[2].update(y=r[2]["y"][:, :18]), r"molecule 2: y must have shape \(1, 19\)"),
        (lambda r: r[3]["edge_index"].__setitem__((0, 0), 99), r"molecule 3 .*outside"),
        (lambda r: r[5].pop("pos"), r"qm9_v3\.pt: molecule 5 has no pos"),
        (lambda r: r.__setitem__(6, "CH4"), r"molecule 6 is a str, expected a dict"),
        (lambda r: r[7]["pos"].__setitem__((1, 2), float("inf")), r"pos of molecule 7 \(gdb_8\)"),
    ],
)
def test_malformed_molecules_are_reported(tmp_path: Path, edit, message: str) -> None:
    with pytest.raises(DatasetError, match=message) as info:
        load_qm9(_bad_root(tmp_path, edit))
    assert "qm9_v3.pt" in str(info.value)


@needs_v3
def test_unreadable_raw_file_is_reported(tmp_path: Path) -> None:
    (tmp_path / "raw").mkdir()
    (tmp_path / "raw" / "qm9_v3.pt").write_bytes(b"not a torch file")
    with pytest.raises(DatasetError, match=r"qm9_v3\.pt: cannot be read as a torch file"):
        load_qm9(tmp_path)


@needs_v3
def test_processed_file_alone_loads_and_new_raw_data_is_reprocessed(tmp_path: Path) -> None:
    data_root = write_fixture(tmp_path / "q", 12, seed=2, sdf=False)
    first, _ = load_qm9(data_root)
    shutil.rmtree(data_root / "raw")  # the processed file is enough; nothing is downloaded
    again, source = load_qm9(data_root)
    assert "processed" in source and torch.equal(again._data.y, first._data.y)
    write_fixture(data_root, 15, seed=3, sdf=False)  # newer raw data replaces the processed file
    fresh, _ = load_qm9(data_root)
    assert len(fresh) == 15


def test_missing_torch_geometric_names_the_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "torch_geometric.datasets", None)  # import fails
    with pytest.raises(MissingExtraError, match=r"fairmtl\[qm9\]"):
        load_qm9(tmp_path)


def test_shards_are_the_molecules_of_the_whole_batch(tmp_path: Path) -> None:
    """Distributed training splits a batch of graphs into contiguous molecule ranges."""
    write_fixture(tmp_path / "q")
    bench = BENCHMARK
    cfg = bench.config("paper").with_overrides(
        {"data.root": str(tmp_path / "q"), "data.val_size": 0.2, "data.test_size": 0.2}
    )
    data = bench.build_data(cfg)
    whole = next(bench.batches(data["train"], 7, None, torch.device("cpu")))
    parts = [bench.shard(whole, r, 2) for r in range(2)]
    assert [p[0].num_graphs for p in parts] == [4, 3]
    assert torch.equal(torch.cat([p[1] for p in parts]), whole[1])
    model = bench.build_model(cfg).eval()
    with torch.no_grad():
        full = torch.cat([o.reshape(-1, 1) for o in model(whole[0])], dim=1)
        split = torch.cat([torch.cat([o.reshape(-1, 1) for o in model(p[0])], dim=1) for p in parts])
    assert torch.allclose(full, split, atol=1e-5)
