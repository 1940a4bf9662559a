"""NYUv2: 13-class segmentation, depth and surface normals with SegNet-MTAN.

The benchmark of FairGrad (Ban & Ji 2024, Table 2), Nash-MTL, CAGrad and FAMO, on the
preprocessed NYUv2 of MTAN (Liu, Johns & Davison 2019): 795 training and 654 validation
images at 288x384, stored as ``{root}/{train,val}/{image,label,depth,normal}/{i}.npy``:

* ``image/i.npy``: ``(H, W, 3)`` floating RGB (MTAN's files hold float64 in [0, 1]);
* ``label/i.npy``: ``(H, W)`` class labels 0..12, -1 = unlabelled (ignored);
* ``depth/i.npy``: ``(H, W, 1)`` floating depth, 0 = missing (ignored);
* ``normal/i.npy``: ``(H, W, 3)`` floating unit normals, all-zero = missing (ignored).

Maps are moved to channels-first and loaded as float32, labels as int64. The dtypes of
the published files are not documented; the loader accepts any floating dtype for the
maps and any integer dtype, or floats holding integers, for the labels.
:func:`write_fixture` writes float64 everywhere (what the published images hold).

Splits. The references train on ``train`` and report on ``val`` (there is no separate
test set), so in the ``paper`` configuration the runner's ``val`` and ``test`` are both
the whole ``val`` folder and the run reports the last epoch (``select="last"``; the
references print per-epoch test metrics and the papers average the last epochs, which
the stored per-epoch rows allow). The ``igb`` configuration follows IGB (Dai et al.
2023, Table 1): plain SegNet, 500 epochs, the val folder split once into 197 validation
and 457 test images, test metrics at the epoch of the best validation Delta m against
IGB's single-task row. IGB's own random split is not published; ours is fixed by
``data.split_seed``.

Configurations: ``paper`` (FairGrad's setting: SegNet-MTAN, Adam 1e-4 halved after 100
epochs, 200 epochs, batch 2, augmentation), ``igb`` (above) and ``cpu`` (reduced, see
``docs/nyuv2.md``).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from fairmtl.bench.base import TrainConfig
from fairmtl.bench.published import published
from fairmtl.bench.segnet import HeadKind, Modality, SceneBenchmark, task_specs

NUM_CLASSES = 13
HEADS: tuple[tuple[HeadKind, int], ...] = (("segmentation", NUM_CLASSES), ("depth", 1), ("normal", 3))
MODALITIES = (
    Modality("image", "image"),
    Modality("label", "label"),
    Modality("depth", "depth"),
    Modality("normal", "normal"),
)


def _stl_rows() -> dict[str, tuple[float, ...]]:
    rows: dict[str, tuple[float, ...]] = {}
    for table in published("nyuv2"):
        key = "igb" if table.source.startswith("IGB") else "fairgrad"
        if table.stl is not None and key not in rows:
            rows[key] = tuple(table.stl)
    return rows


_SCHEDULE = {"type": "step", "step_size": 100, "gamma": 0.5}


class NYUv2(SceneBenchmark):
    """NYUv2 (3 tasks) in MTAN's preprocessed layout; see the module docstring."""

    name = "nyuv2"
    heads = HEADS
    tasks = task_specs(HEADS)
    modalities = MODALITIES
    num_classes = NUM_CLASSES
    default_root = "data/nyuv2"
    stl_baselines: Mapping[str, tuple[float, ...]] = _stl_rows()
    configs: Mapping[str, TrainConfig] = {
        "paper": TrainConfig(
            epochs=200, batch_size=2, lr=1e-4, schedule=_SCHEDULE, select="last",
            eval_batch_size=2,
            data={"root": "data/nyuv2", "model": "mtan", "augment": True, "stl": "fairgrad"},
        ),
        "igb": TrainConfig(
            epochs=500, batch_size=2, lr=1e-4, schedule=_SCHEDULE, select="best",
            eval_batch_size=2,
            data={"root": "data/nyuv2", "model": "segnet", "augment": True, "val_size": 197,
                  "split_seed": 0, "stl": "igb"},
        ),
        "cpu": TrainConfig(
            epochs=4, batch_size=4, lr=1e-3, select="last", eval_batch_size=16,
            data={"root": "data/nyuv2", "model": "mtan", "augment": True, "resolution": [72, 96],
                  "width_div": 8, "max_train": 96, "max_val": 48, "cache": True, "stl": "fairgrad"},
        ),
    }  # fmt: skip
    default_methods = (
        "ls", "si", "rlw", "dwa", "uw", "mgda", "pcgrad", "graddrop", "cagrad", "imtl-g",
        "moco", "nash-mtl", "famo", "fairgrad:alpha=2",
    )  # fmt: skip


BENCHMARK = NYUv2()


def write_fixture(
    root: str | Path,
    n_train: int = 4,
    n_val: int = 3,
    height: int = 32,
    width: int = 64,
    seed: int = 0,
) -> Path:
    """Write a tiny random NYUv2 in the real layout (file names, shapes, float64 dtypes).

    ``{root}/{train,val}/{image,label,depth,normal}/{i}.npy``: images uniform in [0, 1];
    labels in 0..12 with about 10 % of pixels -1; depth in [0.5, 10] with about 10 %
    zeros (missing); unit normals with about 10 % all-zero (missing). Returns ``root``.
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
            depth = rng.uniform(0.5, 10.0, (height, width, 1))
            depth[rng.uniform(size=(height, width)) < 0.1] = 0.0
            normal = rng.normal(size=(height, width, 3))
            normal /= np.linalg.norm(normal, axis=-1, keepdims=True)
            normal[rng.uniform(size=(height, width)) < 0.1] = 0.0
            for m, arr in zip(MODALITIES, (image, label, depth, normal)):
                np.save(root / split / m.folder / f"{i}.npy", arr)
    return root
