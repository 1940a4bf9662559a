"""CelebA (40 attributes): loader and its checks, model, and training runs on a tiny fixture
written in the real on-disk layout."""

from __future__ import annotations

import math
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from fairmtl.bench import base
from fairmtl.bench.base import DatasetError, MissingExtraError
from fairmtl.bench.cli import main
from fairmtl.bench.published import CELEBA_ATTRIBUTES
from fairmtl.bench.runner import train
from fairmtl.bench.store import ResultsStore

pytest.importorskip("PIL")

from fairmtl.bench.celeba import (
    ATTRIBUTE_FILE,
    BENCHMARK,
    IMAGE_DIR,
    PARTITION_FILE,
    CelebANet,
    load_image,
    load_index,
    write_fixture,
)

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def fixture_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_fixture(tmp_path_factory.mktemp("celeba"), n_images=12)


@pytest.fixture(autouse=True)
def _registered(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make ``celeba`` a known benchmark name, as the project's registry will."""
    monkeypatch.setitem(base._BENCHMARK_MODULES, "celeba", "fairmtl.bench.celeba")


def _tiny(root: Path, **extra: object) -> dict[str, object]:
    """The ``cpu`` configuration on the fixture, a few steps on 16x16 images."""
    return {"data.root": str(root), "data.size": 16, "epochs": 2, "batch_size": 4, **extra}


def _check_finished(store: ResultsStore, run_id: int, epochs: list[int]) -> None:
    run = store.run(run_id)
    assert run.status == "finished"
    final = store.final_metrics(run_id)
    expected = {f"{a}/f1" for a in CELEBA_ATTRIBUTES}
    assert set(final["val"]) == expected and set(final["test"]) == expected
    assert all(math.isfinite(v) and 0.0 <= v <= 100.0 for v in final["test"].values())
    for curve in store.epoch_metrics(run_id)["train"].values():
        assert [e for e, _ in curve] == epochs
        assert all(math.isfinite(v) and v > 0 for _, v in curve)


# ----------------------------------------------------------------------------------------
# training
# ----------------------------------------------------------------------------------------


def test_paper_command_trains_on_the_fixture(fixture_root: Path, tmp_path: Path) -> None:
    db = tmp_path / "r.db"
    code = main(["train", "celeba", "--method", BENCHMARK.default_methods[0], "--config", "paper",
                 "--set", f"data.root={fixture_root}", "--set", "epochs=1",
                 "--set", "data.workers=1", "--db", str(db),
                 "--checkpoints", str(tmp_path / "ck"), "--no-progress"])  # fmt: skip
    assert code == 0
    with ResultsStore(db) as store:
        (run,) = store.runs()
        assert run.config["batch_size"] == 256 and run.config["lr"] == 3e-4
        assert run.config["data"]["size"] == 64 and run.config["data"]["workers"] > 0
        _check_finished(store, run.id, [1])


# Per-task gradients of 40 tasks w.r.t. the 5.2M shared parameters take tens of seconds
# per step on a CPU, so the last method trains in features mode (gradients w.r.t. the
# 512-d shared representation); the others train as they would on the GPU.
@pytest.mark.parametrize(("index", "features"), [(0, False), (2, False), (-1, True)])
def test_default_methods_train(
    index: int, features: bool, fixture_root: Path, tmp_path: Path
) -> None:
    method = BENCHMARK.default_methods[index]
    overrides = _tiny(fixture_root, epochs=1, features=features)  # 2 steps
    with ResultsStore(tmp_path / "r.db") as store:
        result = train("celeba", method, "cpu", overrides=overrides, store=store,
                       checkpoints=tmp_path / "ck", progress=False, log=None)  # fmt: skip
        _check_finished(store, result.run_id, [1])
        ((epoch, weights),) = store.task_weights(result.run_id)
        assert epoch == 1 and len(weights) == 40 and all(math.isfinite(w) for w in weights)


def test_an_interrupted_run_resumes(fixture_root: Path, tmp_path: Path) -> None:
    method = BENCHMARK.default_methods[0]
    overrides = _tiny(fixture_root, epochs=2, batch_size=8)  # one step per epoch

    def interrupt(epoch: int, step: int) -> None:
        if (epoch, step) == (1, 1):
            raise KeyboardInterrupt

    kw: dict = {"checkpoints": tmp_path / "ck", "progress": False, "log": None}
    with ResultsStore(tmp_path / "r.db") as store:
        with pytest.raises(KeyboardInterrupt):
            train(
                "celeba", method, "cpu", overrides=overrides, store=store, on_step=interrupt, **kw
            )
        (run,) = store.runs()
        assert run.status == "running"
        assert [e for e, _ in store.epoch_seconds(run.id)] == [1]
        resumed = train("celeba", method, "cpu", overrides=overrides, store=store, **kw)
        assert resumed.run_id == run.id and not resumed.skipped
        _check_finished(store, run.id, [1, 2])
        assert [e for e, _ in store.epoch_seconds(run.id)] == [1, 2]


# ----------------------------------------------------------------------------------------
# data
# ----------------------------------------------------------------------------------------


def test_fixture_is_read_in_the_real_format(fixture_root: Path) -> None:
    header = (fixture_root / ATTRIBUTE_FILE).read_text().splitlines()
    assert header[0] == "12" and header[1].split() == list(CELEBA_ATTRIBUTES)
    assert header[2].startswith("000001.jpg  1 -1  1 -1")
    index = load_index(fixture_root)
    assert {s: len(files) for s, (files, _) in index.items()} == {"train": 8, "val": 2, "test": 2}
    files, labels = index["val"]
    assert [f.name for f in files] == ["000009.jpg", "000010.jpg"]
    # fixture value of image i (0-based) and attribute j is +1 iff i + j is even
    expected = torch.tensor([[int((i + j) % 2 == 0) for j in range(40)] for i in (8, 9)])
    assert torch.equal(labels.long(), expected)
    limited = load_index(fixture_root, {"train": 3, "val": None, "test": 1})
    assert [f.name for f in limited["train"][0]] == ["000001.jpg", "000002.jpg", "000003.jpg"]
    assert len(limited["test"][0]) == 1

    image = load_image(files[0], 64)
    assert image.shape == (3, 64, 64) and image.dtype == torch.uint8
    assert float(image.float().std()) > 1.0  # a real picture, not a constant


@pytest.mark.parametrize("cache", [False, True])
def test_batches_follow_the_generator_and_leave_global_rng_alone(
    fixture_root: Path, cache: bool
) -> None:
    cfg = BENCHMARK.config("paper").with_overrides(
        {"data.root": str(fixture_root), "data.workers": 0, "data.cache": cache}
    )
    data = BENCHMARK.build_data(cfg)
    split = data["train"]
    state = torch.get_rng_state()
    batches = list(BENCHMARK.batches(split, 3, torch.Generator().manual_seed(5), CPU))
    assert torch.equal(torch.get_rng_state(), state)
    # 8 images by 3: 3 + 3 + 2 samples; the order is the generator's permutation
    order = torch.randperm(8, generator=torch.Generator().manual_seed(5))
    assert [b[0].shape[0] for b in batches] == [3, 3, 2] == [len(b[1]) for b in batches]
    assert BENCHMARK.num_batches(split, 3) == 3
    x = torch.cat([b[0] for b in batches])
    y = torch.cat([b[1] for b in batches])
    assert x.dtype == torch.float32 and x.shape == (8, 3, 64, 64)
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
    assert torch.equal(y, split.labels[order].float())
    first = load_image(split.files[int(order[0])], 64).float() / 255.0
    assert torch.equal(x[0], first)
    # a lone trailing sample joins the previous batch (BatchNorm needs two)
    lone = list(BENCHMARK.batches(split, 7, None, CPU))
    assert [b[0].shape[0] for b in lone] == [8] and BENCHMARK.num_batches(split, 7) == 1


def test_dataloader_workers_give_the_same_batches(fixture_root: Path) -> None:
    cfg = BENCHMARK.config("paper").with_overrides({"data.root": str(fixture_root)})
    one = BENCHMARK.build_data(cfg.with_overrides({"data.workers": 0}))["val"]
    two = BENCHMARK.build_data(cfg.with_overrides({"data.workers": 2}))["val"]
    a = list(BENCHMARK.batches(one, 1, None, CPU))
    b = list(BENCHMARK.batches(two, 1, None, CPU))
    assert len(a) == len(b) == 1  # two images: a lone second sample is merged
    assert torch.equal(a[0][0], b[0][0]) and torch.equal(a[0][1], b[0][1])


def _replace_line(path: Path, number: int, new: str) -> None:
    lines = path.read_text().splitlines()
    lines[number - 1] = new
    path.write_text("\n".join(lines) + "\n")


def _edit_value(root: Path) -> None:
    path = root / ATTRIBUTE_FILE
    line = path.read_text().splitlines()[4]
    _replace_line(path, 5, line[: len("000003.jpg")] + "  0" + line[len("000003.jpg") + 3 :])


CORRUPTIONS: dict[str, tuple[Callable[[Path], None], str]] = {
    "missing root": (lambda r: None, r"CelebA root .*nope is not a folder"),
    "missing partition file": (
        lambda r: (r / PARTITION_FILE).unlink(),
        r"list_eval_partition\.txt is missing",
    ),
    "missing attribute file": (
        lambda r: (r / ATTRIBUTE_FILE).unlink(),
        r"list_attr_celeba\.txt is missing",
    ),
    "missing image": (
        lambda r: (r / IMAGE_DIR / "000002.jpg").unlink(),
        r"image .*img_align_celeba/000002\.jpg is missing.*train split",
    ),
    "missing image folder": (
        lambda r: shutil.rmtree(r / IMAGE_DIR),
        r"image folder .*img_align_celeba is missing",
    ),
    "attribute value": (
        _edit_value,
        (
            r"list_attr_celeba\.txt, line 5: value '0' of 5_o_Clock_Shadow for 000003\.jpg "
            r"is not 1 or -1"
        ),
    ),
    "attribute field count": (
        lambda r: _replace_line(r / ATTRIBUTE_FILE, 4, "000002.jpg 1 -1"),
        r"list_attr_celeba\.txt, line 4: expected an image name and 40 values, got 3",
    ),
    "header names": (
        lambda r: _replace_line(
            r / ATTRIBUTE_FILE, 2, " ".join(("Five_o_Clock_Shadow", *CELEBA_ATTRIBUTES[1:]))
        ),
        r"line 2: .*name 1 is 'Five_o_Clock_Shadow', expected '5_o_Clock_Shadow'",
    ),
    "header length": (
        lambda r: _replace_line(r / ATTRIBUTE_FILE, 2, " ".join(CELEBA_ATTRIBUTES[:39])),
        r"line 2: expected the 40 CelebA attribute names .* got 39 names",
    ),
    "count line": (
        lambda r: _replace_line(r / ATTRIBUTE_FILE, 1, "13"),
        r"line 1 announces 13 images, the file lists 12",
    ),
    "partition label": (
        lambda r: _replace_line(r / PARTITION_FILE, 3, "000003.jpg 3"),
        r"list_eval_partition\.txt, line 3: partition label '3' of 000003\.jpg is not 0, 1 or 2",
    ),
    "empty split": (
        lambda r: [_replace_line(r / PARTITION_FILE, n, f"{n:06d}.jpg 0") for n in (11, 12)],
        r"list_eval_partition\.txt: no image is in the test split",
    ),
    "unlabelled image": (
        lambda r: _replace_line(r / ATTRIBUTE_FILE, 12, "000099.jpg" + " -1" * 40),
        (
            r"list_attr_celeba\.txt has no labels for 000010\.jpg, which .*list_eval_partition"
            r"\.txt puts in the val split"
        ),
    ),
}


@pytest.mark.parametrize("case", sorted(CORRUPTIONS))
def test_malformed_data_is_rejected_naming_the_file(case: str, tmp_path: Path) -> None:
    corrupt, message = CORRUPTIONS[case]
    root = write_fixture(tmp_path / "celeba", n_images=12)
    corrupt(root)
    if case == "missing root":
        root = tmp_path / "nope"
    cfg = BENCHMARK.config("cpu").with_overrides({"data.root": str(root)})
    with pytest.raises(DatasetError, match=message):
        BENCHMARK.build_data(cfg)


@pytest.mark.parametrize("workers", [0, 1])
def test_unreadable_or_wrongly_sized_images_are_named_when_loaded(
    workers: int, tmp_path: Path
) -> None:
    root = write_fixture(tmp_path / "celeba", n_images=6)
    image_dir = root / IMAGE_DIR
    (image_dir / "000005.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a JPEG")
    with pytest.raises(DatasetError, match=r"000005\.jpg cannot be decoded as a JPEG"):
        load_image(image_dir / "000005.jpg")
    cfg = BENCHMARK.config("paper").with_overrides(
        {"data.root": str(root), "data.workers": workers}
    )
    data = BENCHMARK.build_data(cfg)  # the index is fine: images are checked when read
    with pytest.raises(DatasetError, match=r"000005\.jpg cannot be decoded") as info:
        list(BENCHMARK.batches(data["test"], 2, None, CPU))
    assert str(info.value).startswith("image ") and "Traceback" not in str(info.value)
    with pytest.raises(DatasetError, match=r"000005\.jpg cannot be decoded"):  # decoded at once
        BENCHMARK.build_data(cfg.with_overrides({"data.cache": True}))

    from PIL import Image

    Image.new("RGB", (64, 64)).save(image_dir / "000006.jpg", format="JPEG")
    with pytest.raises(DatasetError, match=r"000006\.jpg is 64x64; expected .* 178x218"):
        load_image(image_dir / "000006.jpg")
    (image_dir / "000006.jpg").unlink()
    with pytest.raises(DatasetError, match=r"000006\.jpg is missing"):
        load_image(image_dir / "000006.jpg")


def test_missing_pillow_names_the_extra(
    fixture_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "PIL.Image", None)  # import fails
    with pytest.raises(MissingExtraError, match=r"fairmtl\[celeba\]"):
        load_image(fixture_root / IMAGE_DIR / "000001.jpg")


def test_bad_data_options_are_refused(fixture_root: Path) -> None:
    cfg = BENCHMARK.config("cpu").with_overrides({"data.root": str(fixture_root)})
    for key, value, message in [
        ("data.max_train", 0, "data.max_train must be a positive int"),
        ("data.size", 4, "data.size must be an int >= 8"),
        ("data.workers", -1, "data.workers must be an int >= 0"),
        ("data.cache", "yes", "data.cache must be true or false"),
    ]:
        with pytest.raises((ValueError, TypeError), match=message):
            BENCHMARK.build_data(cfg.with_overrides({key: value}))


# ----------------------------------------------------------------------------------------
# model, losses, metrics
# ----------------------------------------------------------------------------------------


def test_model_shapes_and_parameter_split() -> None:
    model = CelebANet()
    model.eval()
    out = model(torch.rand(3, 3, 64, 64))
    assert len(out) == 40 and all(o.shape == (3, 1) for o in out)
    assert all(bool(((o > 0) & (o < 1)).all()) for o in out)  # sigmoid probabilities
    assert [o.shape for o in model(torch.rand(2, 3, 32, 32))] == [(2, 1)] * 40
    shared = {id(p) for p in model.shared_parameters()}
    heads = {id(p) for p in model.task_parameters()}
    assert shared and heads and not (shared & heads)
    assert shared | heads == {id(p) for p in model.parameters()}
    assert {id(p) for p in model.task_parameters(7)} == {id(p) for p in model.heads[7].parameters()}
    convs = [m for m in model.encoder if isinstance(m, torch.nn.Conv2d)]
    fcs = [m for m in model.encoder if isinstance(m, torch.nn.Linear)]
    norms = [
        m for m in model.encoder if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d))
    ]
    assert [c.out_channels for c in convs] == [64, 128, 128, 256, 256, 512, 512]
    assert all(c.bias is None and c.kernel_size == (3, 3) and c.padding == (1, 1) for c in convs)
    assert [(f.in_features, f.out_features) for f in fcs] == [(512, 512), (512, 512)]
    assert len(norms) == 9
    assert sum(isinstance(m, torch.nn.MaxPool2d) for m in model.encoder) == 3
    assert model.last_shared_layer() is model.encoder[-2]
    # 7 convs + 2 FC (no bias) + 9 BN (weight, bias) + 40 heads of 513
    conv = 3 * 64 + 64 * 128 + 128 * 128 + 128 * 256 + 256 * 256 + 256 * 512 + 512 * 512
    total = 9 * conv + 2 * 512 * 512 + 2 * (64 + 2 * 128 + 2 * 256 + 2 * 512 + 2 * 512) + 40 * 513
    assert sum(p.numel() for p in model.parameters()) == total


def test_losses_and_f1_on_a_known_batch() -> None:
    target = torch.tensor([[1.0] * 40, [0.0] * 40, [1.0] * 40, [0.0] * 40])
    half = [torch.full((4, 1), 0.5) for _ in range(40)]
    losses = BENCHMARK.losses(half, (torch.zeros(4, 3, 8, 8), target))
    assert losses.shape == (40,)
    assert torch.allclose(losses, torch.full((40,), math.log(2.0)))
    # task 0 predicts [0.9, 0.8, 0.2, 0.1]: TP 1, FP 1, FN 1 -> F1 = 50
    outputs = [torch.tensor([[0.9], [0.8], [0.2], [0.1]])] + [target[:, :1].clone()] * 39
    metrics = BENCHMARK.new_metrics()
    BENCHMARK.update_metrics(metrics, outputs, (torch.zeros(4, 3, 8, 8), target))
    values = [m.compute()["f1"] for m in metrics]
    assert values[0] == pytest.approx(50.0) and values[1:] == [100.0] * 39
    score = BENCHMARK.val_score({f"{a}/f1": v for a, v in zip(CELEBA_ATTRIBUTES, values)})
    assert score == pytest.approx((50.0 + 39 * 100.0) / 40)


def test_configurations() -> None:
    paper = BENCHMARK.config("paper")
    assert (paper.epochs, paper.batch_size, paper.lr, paper.optimizer) == (15, 256, 3e-4, "adam")
    assert paper.select == "best" and paper.schedule is None and paper.data["size"] == 64
    assert all(paper.data[f"max_{s}"] is None for s in ("train", "val", "test"))
    cpu = BENCHMARK.config("cpu")
    assert cpu.epochs < paper.epochs and cpu.data["max_train"] is not None
    assert len(BENCHMARK.default_methods) == 12
    assert [t.name for t in BENCHMARK.tasks] == list(CELEBA_ATTRIBUTES)
