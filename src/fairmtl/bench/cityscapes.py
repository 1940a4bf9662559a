"""Cityscapes: 7-class segmentation and inverse depth with SegNet-MTAN.

The benchmark of FairGrad (Ban & Ji 2024, Table 3), Nash-MTL, CAGrad and FAMO, on the
preprocessed Cityscapes of MTAN (Liu, Johns & Davison 2019): 2,975 training and 500
validation images at 128x256, stored as ``{root}/{train,val}/{image,label_7,depth}/{i}.npy``:

* ``image/i.npy``: ``(H, W, 3)`` floating RGB;
* ``label_7/i.npy``: ``(H, W)`` labels of the 7 coarse classes 0..6, -1 = void (ignored);
* ``depth/i.npy``: ``(H, W, 1)`` floating *inverse* depth (disparity), 0 = missing.

Maps are moved to channels-first and loaded as float32, labels as int64 (dtypes on disk:
any floating dtype for the maps; any integer dtype, or floats holding integers, for the
labels; :func:`write_fixture` writes float64). Depth errors are computed on the stored
inverse depth, and ``rel_err`` is the plain ratio ``|p - t| / t`` averaged over valid
pixels, not a percentage (the published 27.77 of the single-task row is that ratio).

Splits as for NYUv2: the references report on the ``val`` folder, so in ``paper`` the
runner's ``val`` and ``test`` are both the whole val folder and the last epoch is
reported. Configurations: ``paper`` (SegNet-MTAN, batch 8, Adam 1e-4 halved after 100
epochs, 200 epochs, scale-crop and flip augmentation) and ``cpu`` (reduced, see
``docs/cityscapes.md``).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from fairmtl.bench.base import TrainConfig
from fairmtl.bench.published import published
from fairmtl.bench.segnet import HeadKind, Modality, SceneBenchmark, task_specs

NUM_CLASSES = 7
HEADS: tuple[tuple[HeadKind, int], ...] = (("segmentation", NUM_CLASSES), ("depth", 1))
MODALITIES = (Modality("image", "image"), Modality("label_7", "label"), Modality("depth", "depth"))
_SCHEDULE = {"type": "step", "step_size": 100, "gamma": 0.5}


class Cityscapes(SceneBenchmark):
    """Cityscapes (2 tasks) in MTAN's preprocessed layout; see the module docstring."""

    name = "cityscapes"
    heads = HEADS
    tasks = task_specs(HEADS)
    modalities = MODALITIES
    num_classes = NUM_CLASSES
    default_root = "data/cityscapes"
    stl_baselines: Mapping[str, tuple[float, ...]] = {"fairgrad": tuple(published("cityscapes")[0].stl or ())}
    configs: Mapping[str, TrainConfig] = {
        "paper": TrainConfig(
            epochs=200, batch_size=8, lr=1e-4, schedule=_SCHEDULE, select="last",
            eval_batch_size=8,
            data={"root": "data/cityscapes", "model": "mtan", "augment": True},
        ),
        "cpu": TrainConfig(
            epochs=4, batch_size=8, lr=1e-3, select="last", eval_batch_size=16,
            data={"root": "data/cityscapes", "model": "mtan", "augment": True,
                  "resolution": [64, 128], "width_div": 8, "max_train": 128, "max_val": 64,
                  "cache": True},
        ),
    }  # fmt: skip
    default_methods = (
        "ls", "uw", "mgda", "pcgrad", "cagrad", "imtl-g", "moco", "nash-mtl", "famo",
        "fairgrad:alpha=2",
    )  # fmt: skip


BENCHMARK = Cityscapes()


def write_fixture(
    root: str | Path,
    n_train: int = 4,
    n_val: int = 3,
    height: int = 32,
    width: int = 64,
    seed: int = 0,
) -> Path:
    """Write a tiny random Cityscapes in the real layout (file names, shapes, float64 dtypes).

    ``{root}/{train,val}/{image,label_7,depth}/{i}.npy``: images uniform in [0, 1]; labels
    in 0..6 with about 10 % of pixels -1; inverse depth in [0.002, 0.1] with about 10 %
    zeros (missing). Returns ``root``.
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    for split, n in (("train", n_train), ("val", n_val)):
        for m in MODALITIES:
            (root / split / m.folder).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            image = rng.uniform(0.0, 1.0, (height, width, 3))
            label = rng.integers(0, NUM_CLASSES, (height, width)).astype(np.float64)
            label[rng.uniform(size=(height, width)) < 0.1] = -1.0
            depth = rng.uniform(0.002, 0.1, (height, width, 1))
            depth[rng.uniform(size=(height, width)) < 0.1] = 0.0
            for m, arr in zip(MODALITIES, (image, label, depth)):
                np.save(root / split / m.folder / f"{i}.npy", arr)
    return root
