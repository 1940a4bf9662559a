"""QM9: 11 molecular property regression tasks (FairGrad Tables 1 and 8, IGB Table 2).

The benchmark of Nash-MTL (Navon et al., ICML 2022), reused by FAMO, IGB (Dai et al.
2023) and FairGrad (Ban & Ji, ICML 2024): predict 11 quantum-chemical properties of a
small organic molecule from its graph with one shared message-passing network.

Data: PyTorch Geometric's ``torch_geometric.datasets.QM9`` on ``data.root`` (optional
extra ``qm9``), i.e. ``ROOT/raw/qm9_v3.pt`` (PyG's pre-processed list of molecules, used
when rdkit is not installed), or ``ROOT/raw/{gdb9.sdf, gdb9.sdf.csv,
uncharacterized.txt}`` (used when rdkit is installed), or PyG's processed file
``ROOT/processed/data_v3.pt``. Nothing is ever downloaded: missing files are a
:class:`~fairmtl.bench.base.DatasetError` naming them. Targets are PyG's columns
``0, 1, 2, 3, 5, 6, 12, 13, 14, 15, 11`` (mu, alpha, homo, lumo, <R^2>, ZPVE, U0, U, H,
G, c_v; the energies U0..G are PyG's atomization energies, as in DimeNet and the
reference).

Graph: the molecule made fully connected (:class:`Complete`: every ordered pair of
distinct atoms; bonds keep their 4-dim one-hot bond type, new edges get zeros) with the
interatomic distance appended (PyG's ``Distance(norm=False)``), so edges carry 5 features.
:func:`collate_complete` builds exactly these graphs for a whole batch with tensor
operations (the reference transforms one molecule at a time in Python).

Model (PyG's ``examples/qm9_nn_conv.py``, an MPNN after Gilmer et al. 2017, as in the
Nash-MTL reference): Linear(11, 64) + ReLU; 3 iterations of NNConv (edge network
Linear(5, 128)-ReLU-Linear(128, 64*64), mean aggregation) + ReLU followed by a GRU(64, 64);
Set2Set(64, 3 steps); Linear(128, 64) + ReLU. Everything up to here is shared; each task
has a Linear(64, 1) head.

Training ("paper" configuration): split after a shuffle fixed by ``data.data_seed`` (test
10,000, validation 10,000, the rest training); targets standardised (training-split
statistics by default; ``data.standardise="all"`` uses every molecule's, which is what the
reference code effectively does); per-task MSE on standardised targets; Adam lr 1e-3,
ReduceLROnPlateau(factor 0.7, patience 5, min_lr 1e-5) on the validation Delta m, 300
epochs, batch 120; test metrics at the epoch of the best validation Delta m against the
single-task baseline of :data:`fairmtl.bench.published.QM9_STL_SPEC`. Metric: MAE in
original units, in meV (x1000) for homo, lumo, ZPVE, U0, U, H and G. The "cpu"
configuration is reduced (500 molecules, width 32, 5 epochs) and needs the real data.

Benchmark options (``--set data.NAME=VALUE``): ``root``, ``val_size`` and ``test_size``
(counts, or fractions in (0, 1) for small data such as :func:`write_fixture`'s),
``data_seed``, ``max_molecules``, ``standardise`` (``"train"`` or ``"all"``) and
``hidden`` (the network's width, 64). See ``docs/qm9.md``.
"""

from __future__ import annotations

import copy
import math
import random
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fairmtl.bench.base import (
    Batch,
    Benchmark,
    DatasetError,
    MultiTaskModel,
    TaskSpec,
    TrainConfig,
    require,
)
from fairmtl.bench.published import QM9_STL_SPEC, QM9_TARGETS
from fairmtl.metrics import MAE, MetricSpec, TaskMetric, delta_m

__all__ = [
    "BENCHMARK",
    "MEV_TASKS",
    "QM9",
    "TARGET_COLUMNS",
    "Complete",
    "GraphBatch",
    "MPNNEncoder",
    "Molecules",
    "QM9Net",
    "QM9Split",
    "check_layout",
    "check_storage",
    "collate_complete",
    "load_qm9",
    "qm9_transform",
    "split_indices",
    "write_fixture",
]

#: PyG QM9 target columns of the 11 tasks, in the papers' table order (QM9_TARGETS).
TARGET_COLUMNS = (0, 1, 2, 3, 5, 6, 12, 13, 14, 15, 11)
#: Tasks (0-based positions in TARGET_COLUMNS) reported in meV, i.e. PyG's eV times 1000.
MEV_TASKS = (2, 3, 5, 6, 7, 8, 9)

NUM_NODE_FEATURES = 11
NUM_BOND_TYPES = 4
NUM_PYG_TARGETS = 19
RAW_PT = "qm9_v3.pt"
RAW_SDF = ("gdb9.sdf", "gdb9.sdf.csv", "uncharacterized.txt")
PROCESSED = "data_v3.pt"

_LAYOUT = (
    "ROOT/raw/qm9_v3.pt (PyG's pre-processed molecules, read when rdkit is not installed), "
    "ROOT/raw/gdb9.sdf + gdb9.sdf.csv + uncharacterized.txt (read when rdkit is installed), "
    "or PyG's processed file ROOT/processed/data_v3.pt; see docs/qm9.md"
)


# ----------------------------------------------------------------------------------------
# graph transform
# ----------------------------------------------------------------------------------------


class Complete:
    """Make a molecule's graph fully connected, as in PyG's ``examples/qm9_nn_conv.py``.

    The new graph has an edge ``i -> j`` for every ordered pair of distinct atoms, in
    row-major order (``i`` then ``j``), and no self loops. An edge that was a bond keeps
    its attributes; every new edge gets zeros. The input object is not modified: a
    shallow copy with the new ``edge_index`` and ``edge_attr`` is returned.
    """

    def __call__(self, data: Any) -> Any:
        n = int(data.num_nodes)
        edge_index = data.edge_index
        device = edge_index.device
        row = torch.arange(n, device=device).repeat_interleave(n)
        col = torch.arange(n, device=device).repeat(n)
        keep = row != col
        out = copy.copy(data)
        out.edge_index = torch.stack([row[keep], col[keep]])
        attr = getattr(data, "edge_attr", None)
        if attr is not None:
            dense = attr.new_zeros((n * n, *attr.shape[1:]))
            dense[edge_index[0] * n + edge_index[1]] = attr
            out.edge_attr = dense[keep]
        return out

    def __repr__(self) -> str:
        return "Complete()"


def qm9_transform() -> Any:
    """The reference's per-molecule transform: :class:`Complete`, then PyG's ``Distance(norm=False)``.

    The benchmark builds the same graphs for a whole batch at once (:func:`collate_complete`);
    this per-molecule form is kept for comparison and for use with PyG's own loaders.
    """
    transforms = require("torch_geometric.transforms", "qm9")
    return transforms.Compose([Complete(), transforms.Distance(norm=False)])


# ----------------------------------------------------------------------------------------
# loading and validation
# ----------------------------------------------------------------------------------------


def _pyg_raw_file_names() -> list[str]:
    """The raw files the installed PyG's QM9 reads (its own rdkit check decides)."""
    datasets = require("torch_geometric.datasets", "qm9")
    names: list[str] = list(datasets.QM9.raw_file_names.fget(None))
    return names


def check_layout(root: str | Path) -> str:
    """Check that PyG's QM9 can load ``root`` without downloading; return a description.

    Returns the file(s) the data will come from (for error messages). Raises
    :class:`DatasetError` naming the missing files when neither the raw files that the
    installed PyG reads nor its processed file are there (PyG would download them).
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"QM9 folder {root} does not exist or is not a folder; expected {_LAYOUT}")
    raw_names = _pyg_raw_file_names()
    raw = [root / "raw" / name for name in raw_names]
    processed = root / "processed" / PROCESSED
    if processed.is_file():
        return str(processed)
    missing = [str(p) for p in raw if not p.is_file()]
    if not missing:
        return ", ".join(str(p) for p in raw)
    message = (
        f"QM9 raw file(s) missing: {', '.join(missing)}. torch_geometric's QM9 would try to "
        f"download them; fairmtl never downloads. Expected {_LAYOUT}"
    )
    sdf_present = all((root / "raw" / name).is_file() for name in RAW_SDF)
    if raw_names == [RAW_PT] and sdf_present:
        message += (
            ". The folder has gdb9.sdf, gdb9.sdf.csv and uncharacterized.txt, which "
            "torch_geometric processes only when rdkit is installed (pip install rdkit)"
        )
    elif raw_names != [RAW_PT] and (root / "raw" / RAW_PT).is_file():
        message += (
            ". The folder has raw/qm9_v3.pt, but rdkit is installed, so torch_geometric's "
            "QM9 reads the SDF files instead (uninstall rdkit or add the SDF files)"
        )
    raise DatasetError(message)


_LOCAL_QM9: Any = None


def _local_qm9_class() -> Any:
    """PyG's QM9 with ``download`` replaced by an error (defined on first use)."""
    global _LOCAL_QM9
    if _LOCAL_QM9 is None:
        datasets = require("torch_geometric.datasets", "qm9")

        class LocalQM9(datasets.QM9):  # type: ignore[misc,name-defined]
            """PyG's QM9 that never downloads (fairmtl checks the files first)."""

            def download(self) -> None:
                if Path(self.processed_paths[0]).is_file():
                    return  # processed file only: PyG loads it, the raw files are not needed
                raise DatasetError(
                    f"QM9 raw files missing in {self.raw_dir}: {', '.join(self.raw_file_names)}; "
                    "fairmtl never downloads"
                )

        _LOCAL_QM9 = LocalQM9
    return _LOCAL_QM9


def load_qm9(root: str | Path) -> tuple[Any, str]:
    """PyG's QM9 dataset on ``root``, validated (no transform: see :func:`collate_complete`).

    Returns ``(dataset, source)``; ``source`` names the file the molecules came from.
    On first use PyG processes the raw files into ``ROOT/processed/data_v3.pt`` (the
    folder must be writable). Raises :class:`DatasetError` for missing, unreadable or
    malformed data, naming the file.
    """
    source = check_layout(root)
    cls = _local_qm9_class()
    raw = [Path(root) / "raw" / name for name in _pyg_raw_file_names()]
    processed = Path(root) / "processed" / PROCESSED
    # PyG never re-processes on its own: a raw file newer than the processed one (fixed or
    # replaced data) is processed again rather than silently ignored.
    stale = processed.is_file() and all(p.is_file() for p in raw) and any(
        p.stat().st_mtime_ns > processed.stat().st_mtime_ns for p in raw
    )
    if stale:
        source = ", ".join(str(p) for p in raw)
    try:
        dataset = cls(str(root), force_reload=stale)
    except DatasetError:
        raise
    except Exception as exc:  # PyG's errors for an unreadable file vary (pickle, KeyError, ...)
        if source != str(processed) and raw[0].name == RAW_PT:
            _diagnose_raw_list(raw[0])  # raises a precise DatasetError when it finds the fault
        raise DatasetError(
            f"{source}: torch_geometric's QM9 could not read it ({type(exc).__name__}: {exc}); "
            "expected PyG's QM9 format (a list of molecules with x, edge_index, edge_attr, pos, "
            "z and y; see docs/qm9.md)"
        ) from exc
    if source == str(processed):
        source += " (made by torch_geometric from the raw files; delete it to process them again)"
    check_storage(dataset, source)
    return dataset, source


def _diagnose_raw_list(path: Path) -> None:
    """Find the first malformed molecule of a ``qm9_v3.pt`` list; raise :class:`DatasetError`.

    Called when PyG fails to process the file, to name the molecule and what was expected.
    Returns quietly when the file loads and every record looks right.
    """
    try:
        records = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise DatasetError(
            f"{path}: cannot be read as a torch file ({type(exc).__name__}: {exc}); expected "
            "PyG's pre-processed QM9 (a torch.save'd list of dicts)"
        ) from exc
    if not isinstance(records, list):
        raise DatasetError(f"{path}: expected a list of molecule dicts, got {type(records).__name__}")
    for i, rec in enumerate(records):
        where = f"{path}: molecule {i}"
        if not isinstance(rec, dict):
            raise DatasetError(f"{where} is a {type(rec).__name__}, expected a dict")
        missing = [k for k in ("x", "edge_index", "edge_attr", "pos", "y") if k not in rec]
        if missing:
            raise DatasetError(f"{where} has no {', '.join(missing)}")
        bad = [k for k in ("x", "edge_index", "edge_attr", "pos", "y")
               if not isinstance(rec[k], Tensor)]  # fmt: skip
        if bad:
            raise DatasetError(f"{where}: {', '.join(bad)} must be tensors")
        x, ei, ea, pos, y = (rec[k] for k in ("x", "edge_index", "edge_attr", "pos", "y"))
        n = x.shape[0] if x.ndim == 2 else -1
        e = ei.shape[1] if ei.ndim == 2 else -1
        for key, value, shape in (
            ("x", x, (n, NUM_NODE_FEATURES)),
            ("pos", pos, (n, 3)),
            ("edge_index", ei, (2, e)),
            ("edge_attr", ea, (e, NUM_BOND_TYPES)),
            ("y", y, (1, NUM_PYG_TARGETS)),
        ):
            if n < 0 or e < 0 or tuple(value.shape) != shape:
                raise DatasetError(
                    f"{where}: {key} must have shape {shape} (atoms={n}, edges={e}), got "
                    f"{tuple(value.shape)}"
                )
        if ei.numel() and (int(ei.min()) < 0 or int(ei.max()) >= n):
            raise DatasetError(f"{where}: edge_index refers to an atom outside 0..{n - 1}")


def _counts(slices: Mapping[str, Tensor] | None, key: str, total: int, graphs: int) -> Tensor:
    """Per-molecule sizes of a stored attribute (``slices`` is ``None`` for one molecule)."""
    if slices is None or key not in slices:
        return torch.tensor([total] * graphs)
    return slices[key].diff()


def _molecule(dataset: Any, i: int) -> str:
    names = getattr(dataset._data, "name", None)
    if isinstance(names, list) and i < len(names):
        return f"molecule {i} ({names[i]})"
    return f"molecule {i}"


def check_storage(dataset: Any, source: str) -> None:
    """Check every molecule of a loaded PyG QM9 dataset; :class:`DatasetError` naming ``source``.

    Checks (vectorised over the whole in-memory store): the attributes ``x`` (11 float
    features per atom), ``pos`` (3 per atom), ``edge_index`` (2 x E, atom indices inside
    their molecule), ``edge_attr`` (4 bond-type features per edge) and ``y`` (19 targets
    per molecule) exist with these shapes, and the values used are finite.
    """
    data = dataset._data
    graphs = len(dataset)
    for key in ("x", "edge_index", "edge_attr", "pos", "y"):
        if getattr(data, key, None) is None:
            raise DatasetError(
                f"{source}: the molecules have no {key!r}; expected PyG's QM9 attributes "
                "x, edge_index, edge_attr, pos, z, y"
            )
    x, pos, edge_index, edge_attr, y = data.x, data.pos, data.edge_index, data.edge_attr, data.y

    def shape_error(key: str, expected: str, got: Tensor) -> DatasetError:
        return DatasetError(f"{source}: {key} must have shape {expected}, got {tuple(got.shape)}")

    if x.ndim != 2 or x.shape[1] != NUM_NODE_FEATURES or not x.dtype.is_floating_point:
        raise shape_error("x", f"(atoms, {NUM_NODE_FEATURES}) floating", x)
    if pos.ndim != 2 or pos.shape != (x.shape[0], 3):
        raise shape_error("pos", f"(atoms={x.shape[0]}, 3)", pos)
    if edge_index.ndim != 2 or edge_index.shape[0] != 2 or edge_index.dtype != torch.long:
        raise shape_error("edge_index", "(2, edges) int64", edge_index)
    if edge_attr.ndim != 2 or edge_attr.shape != (edge_index.shape[1], NUM_BOND_TYPES):
        raise shape_error("edge_attr", f"(edges={edge_index.shape[1]}, {NUM_BOND_TYPES})", edge_attr)
    if y.ndim != 2 or y.shape != (graphs, NUM_PYG_TARGETS):
        raise shape_error("y", f"(molecules={graphs}, {NUM_PYG_TARGETS})", y)

    slices = getattr(dataset, "slices", None)
    atoms = _counts(slices, "x", x.shape[0], graphs)
    edges = _counts(slices, "edge_index", edge_index.shape[1], graphs)
    for key, values, counts in (("x", x, atoms), ("pos", pos, atoms), ("edge_attr", edge_attr, edges)):
        bad = (~torch.isfinite(values)).any(dim=1).nonzero()
        if bad.numel():
            owner = int(torch.searchsorted(counts.cumsum(0), bad[0, 0], right=True))
            raise DatasetError(f"{source}: {key} of {_molecule(dataset, owner)} is not finite")
    if bool((atoms < 1).any()):
        i = int((atoms < 1).nonzero()[0, 0])
        raise DatasetError(f"{source}: {_molecule(dataset, i)} has no atoms")
    owner_of_edge = torch.repeat_interleave(torch.arange(graphs), edges)
    limit = atoms[owner_of_edge]
    bad_edges = ((edge_index < 0) | (edge_index >= limit)).any(dim=0).nonzero()
    if bad_edges.numel():
        i = int(owner_of_edge[bad_edges[0, 0]])
        raise DatasetError(
            f"{source}: edge_index of {_molecule(dataset, i)} refers to an atom outside "
            f"0..{int(atoms[i]) - 1}"
        )
    targets = y[:, list(TARGET_COLUMNS)]
    bad = (~torch.isfinite(targets)).nonzero()
    if bad.numel():
        i, k = int(bad[0, 0]), int(bad[0, 1])
        raise DatasetError(
            f"{source}: target {QM9_TARGETS[k]} (PyG column {TARGET_COLUMNS[k]}) of "
            f"{_molecule(dataset, i)} is {targets[i, k].item()}; expected a finite value"
        )


# ----------------------------------------------------------------------------------------
# splits
# ----------------------------------------------------------------------------------------


def _size(value: Any, n: int, name: str) -> int:
    """A split size: an int count, or a float fraction in (0, 1) of ``n`` (at least 1)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"data.{name} must be an int count or a fraction in (0, 1), got {value!r}")
    if isinstance(value, int):
        if value < 1:
            raise ValueError(f"data.{name} must be >= 1, got {value}")
        return value
    if not 0.0 < value < 1.0:
        raise ValueError(f"data.{name} as a fraction must be in (0, 1), got {value}")
    return max(1, round(value * n))


def split_indices(
    n: int,
    val_size: float,
    test_size: float,
    data_seed: int,
    max_molecules: int | None = None,
    source: str = "QM9",
) -> dict[str, Tensor]:
    """Shuffle ``n`` molecules with ``data_seed``; first ``test_size`` test, next ``val_size`` val.

    As the reference (PyG example, Nash-MTL): test is the first slice of the shuffled
    order, validation the next, training the rest. ``max_molecules`` keeps only the first
    that many of the shuffled order (a random subset) before splitting. Sizes are counts
    or fractions of the molecules kept. Raises :class:`DatasetError` when there are not
    more molecules than ``val_size + test_size``.
    """
    if max_molecules is not None and (
        isinstance(max_molecules, bool) or not isinstance(max_molecules, int) or max_molecules < 3
    ):
        raise ValueError(f"data.max_molecules must be an int >= 3 or null, got {max_molecules!r}")
    gen = torch.Generator().manual_seed(int(data_seed))
    order = torch.randperm(n, generator=gen)
    if max_molecules is not None:
        order = order[:max_molecules]
    kept = order.numel()
    n_test = _size(test_size, kept, "test_size")
    n_val = _size(val_size, kept, "val_size")
    if kept <= n_test + n_val:
        raise DatasetError(
            f"{source}: {kept} molecules, but the test ({n_test}) and validation ({n_val}) "
            f"splits alone need {n_test + n_val} and training needs at least one more; lower "
            "data.val_size/data.test_size (counts or fractions)"
        )
    return {
        "test": order[:n_test],
        "val": order[n_test : n_test + n_val],
        "train": order[n_test + n_val :],
    }


@dataclass(frozen=True)
class Molecules:
    """Every molecule of a dataset, concatenated as PyG stores them in memory.

    ``x`` (atoms, 11), ``pos`` (atoms, 3), ``edge_index`` (2, bonds) with atom indices
    local to their molecule, ``edge_attr`` (bonds, 4); molecule ``m`` owns atoms
    ``node_ptr[m]:node_ptr[m+1]`` and bonds ``edge_ptr[m]:edge_ptr[m+1]``.
    """

    x: Tensor
    pos: Tensor
    edge_index: Tensor
    edge_attr: Tensor
    node_ptr: Tensor
    edge_ptr: Tensor

    @classmethod
    def from_dataset(cls, dataset: Any) -> Molecules:
        """The storage of a loaded (and checked) PyG QM9 dataset."""
        data = dataset._data
        slices = getattr(dataset, "slices", None)

        def ptr(key: str, total: int) -> Tensor:
            if slices is None:  # PyG keeps no slices for a single molecule
                return torch.tensor([0, total])
            return slices[key].to(torch.long)

        return cls(
            x=data.x.to(torch.float32),
            pos=data.pos.to(torch.float32),
            edge_index=data.edge_index,
            edge_attr=data.edge_attr.to(torch.float32),
            node_ptr=ptr("x", data.x.shape[0]),
            edge_ptr=ptr("edge_index", data.edge_index.shape[1]),
        )


@dataclass(frozen=True)
class GraphBatch:
    """A batch of complete molecular graphs: what :class:`MPNNEncoder` reads.

    ``x`` (atoms, 11), ``pos`` (atoms, 3), ``edge_index`` (2, edges) with batch-global atom
    indices, ``edge_attr`` (edges, 5): bond one-hot (zeros for non-bonds) and distance,
    ``batch`` (atoms,) the molecule of each atom, ``num_graphs``.
    """

    x: Tensor
    pos: Tensor
    edge_index: Tensor
    edge_attr: Tensor
    batch: Tensor
    num_graphs: int

    def to(self, device: torch.device | str) -> GraphBatch:
        return GraphBatch(self.x.to(device), self.pos.to(device), self.edge_index.to(device),
                          self.edge_attr.to(device), self.batch.to(device), self.num_graphs)  # fmt: skip

    def graphs(self, first: int, stop: int) -> GraphBatch:
        """The molecules ``first .. stop - 1`` as a batch of their own (distributed shards)."""
        atoms = (self.batch >= first) & (self.batch < stop)
        offset = int(atoms.nonzero()[0]) if bool(atoms.any()) else 0
        edges = atoms[self.edge_index[0]]
        return GraphBatch(self.x[atoms], self.pos[atoms], self.edge_index[:, edges] - offset,
                          self.edge_attr[edges], self.batch[atoms] - first, stop - first)  # fmt: skip


def _ptr(sizes: Tensor) -> Tensor:
    out = torch.zeros(sizes.numel() + 1, dtype=torch.long)
    out[1:] = sizes.cumsum(0)
    return out


def collate_complete(molecules: Molecules, ids: Tensor) -> GraphBatch:
    """Molecules ``ids`` as one batch of complete graphs with distances, in one go.

    The same graphs, in the same order, as applying :class:`Complete` and PyG's
    ``Distance(norm=False)`` to each molecule and collating them with PyG's
    ``Batch.from_data_list`` (the reference's per-molecule pipeline, see
    :func:`qm9_transform`), built with whole-batch tensor operations instead of a Python
    loop over molecules.
    """
    ids = ids.to(torch.long)
    b = ids.numel()
    graphs = torch.arange(b)
    start = molecules.node_ptr[ids]
    n = molecules.node_ptr[ids + 1] - start
    node_ptr = _ptr(n)
    graph_of_node = torch.repeat_interleave(graphs, n)
    node_idx = start[graph_of_node] + torch.arange(int(node_ptr[-1])) - node_ptr[:-1][graph_of_node]
    pos = molecules.pos[node_idx]
    # Every ordered pair (i, j) of each molecule, row-major; self pairs are dropped below.
    pair_ptr = _ptr(n * n)
    graph_of_pair = torch.repeat_interleave(graphs, n * n)
    k = torch.arange(int(pair_ptr[-1])) - pair_ptr[:-1][graph_of_pair]
    size = n[graph_of_pair]
    i, j = k // size, k % size
    # Bonds keep their attributes at their pair's position; other pairs stay zero.
    e_start = molecules.edge_ptr[ids]
    e = molecules.edge_ptr[ids + 1] - e_start
    edge_ptr = _ptr(e)
    graph_of_edge = torch.repeat_interleave(graphs, e)
    edge_idx = e_start[graph_of_edge] + torch.arange(int(edge_ptr[-1])) - edge_ptr[:-1][graph_of_edge]
    row, col = molecules.edge_index[:, edge_idx]
    dense = molecules.edge_attr.new_zeros((int(pair_ptr[-1]), molecules.edge_attr.shape[1]))
    dense[pair_ptr[:-1][graph_of_edge] + row * n[graph_of_edge] + col] = molecules.edge_attr[edge_idx]
    keep = i != j
    offset = node_ptr[:-1][graph_of_pair]
    edge_index = torch.stack([(offset + i)[keep], (offset + j)[keep]])
    src, dst = edge_index
    dist = torch.norm(pos[dst] - pos[src], p=2, dim=-1).view(-1, 1)
    attr = dense[keep]
    return GraphBatch(
        x=molecules.x[node_idx],
        pos=pos,
        edge_index=edge_index,
        edge_attr=torch.cat([attr, dist.type_as(attr)], dim=-1),
        batch=graph_of_node,
        num_graphs=b,
    )


@dataclass(frozen=True)
class QM9Split:
    """One split: molecules ``index`` of ``molecules`` and their standardised targets ``y`` (n, 11)."""

    molecules: Molecules
    index: Tensor
    y: Tensor

    def __len__(self) -> int:
        return int(self.index.numel())


# ----------------------------------------------------------------------------------------
# model
# ----------------------------------------------------------------------------------------


class MPNNEncoder(nn.Module):
    """The shared part of PyG's QM9 NNConv example (Gilmer et al. 2017's MPNN).

    Linear(11, dim) + ReLU; ``steps`` x (NNConv with edge network Linear(5, 128)-ReLU-
    Linear(128, dim*dim), mean aggregation; ReLU; GRU(dim, dim)); Set2Set(dim, 3 steps);
    Linear(2*dim, dim) + ReLU. Input: a :class:`GraphBatch` (or a PyG ``Batch`` of
    molecules after :func:`qm9_transform`); output: ``(molecules, dim)``.
    """

    def __init__(self, num_features: int = NUM_NODE_FEATURES, dim: int = 64,
                 edge_features: int = NUM_BOND_TYPES + 1, steps: int = 3) -> None:  # fmt: skip
        super().__init__()
        pyg_nn = require("torch_geometric.nn", "qm9")
        self.steps = steps
        # Registration order = the reference's construction order (same initialisation draws);
        # lin1 is registered last, so it is the last shared layer (GradNorm's ``layer``).
        self.lin0 = nn.Linear(num_features, dim)
        edge_net = nn.Sequential(nn.Linear(edge_features, 128), nn.ReLU(), nn.Linear(128, dim * dim))
        self.conv = pyg_nn.NNConv(dim, dim, edge_net, aggr="mean")
        self.gru = nn.GRU(dim, dim)
        self.set2set = pyg_nn.Set2Set(dim, processing_steps=3)
        self.lin1 = nn.Linear(2 * dim, dim)

    def forward(self, graph: Any) -> Tensor:
        out = F.relu(self.lin0(graph.x))
        h = out.unsqueeze(0)
        for _ in range(self.steps):
            m = F.relu(self.conv(out, graph.edge_index, graph.edge_attr))
            seq, h = self.gru(m.unsqueeze(0), h)
            out = seq.squeeze(0)
        pooled = self.set2set(out, graph.batch, dim_size=int(graph.num_graphs))
        return F.relu(self.lin1(pooled))


class QM9Net(MultiTaskModel):
    """:class:`MPNNEncoder` shared by ``num_tasks`` Linear(dim, 1) heads (Nash-MTL's QM9 model)."""

    def __init__(self, num_tasks: int = len(TARGET_COLUMNS), dim: int = 64) -> None:
        super().__init__(MPNNEncoder(dim=dim), [nn.Linear(dim, 1) for _ in range(num_tasks)])


# ----------------------------------------------------------------------------------------
# the benchmark
# ----------------------------------------------------------------------------------------

_PLATEAU = {"type": "plateau", "factor": 0.7, "patience": 5, "min_lr": 1e-5}
_STANDARDISE = ("train", "all")
_OPTIONS = ("root", "val_size", "test_size", "data_seed", "standardise", "max_molecules", "hidden")


class QM9(Benchmark):
    """QM9 with 11 targets (Nash-MTL's setting; FairGrad Table 8, IGB Table 2)."""

    name = "qm9"
    tasks = tuple(TaskSpec(t, (MetricSpec("mae", False),)) for t in QM9_TARGETS)
    configs: Mapping[str, TrainConfig] = {
        # Published setting (Nash-MTL code; FairGrad and IGB reuse it).
        "paper": TrainConfig(
            epochs=300, batch_size=120, lr=1e-3, schedule=_PLATEAU, select="best",
            eval_batch_size=120,
            data={"root": "data/qm9", "val_size": 10_000, "test_size": 10_000, "data_seed": 0,
                  "standardise": "train", "max_molecules": None, "hidden": 64},
        ),
        # Reduced for 2 CPU cores (real data only): 500 random molecules (300 train, 100
        # val, 100 test), hidden width 32 instead of 64, batch 50, 5 epochs; the paper's
        # architecture, transforms, losses, optimizer, schedule and model selection.
        "cpu": TrainConfig(
            epochs=5, batch_size=50, lr=1e-3, schedule=_PLATEAU, select="best",
            eval_batch_size=100,
            data={"root": "data/qm9", "val_size": 100, "test_size": 100, "data_seed": 0,
                  "standardise": "train", "max_molecules": 500, "hidden": 32},
        ),
    }  # fmt: skip
    default_methods = (
        "ls", "si", "rlw", "dwa", "uw", "mgda", "pcgrad", "cagrad", "imtl-g", "nash-mtl",
        "famo", "fairgrad:alpha=2", "igbv1", "igbv2",
    )  # fmt: skip

    def __init__(self) -> None:
        self._cache: dict[tuple[Any, ...], tuple[dict[str, QM9Split], tuple[Tensor, Tensor]]] = {}
        self._stats: tuple[Tensor, Tensor] | None = None

    # -- data --------------------------------------------------------------------------

    def build_data(self, config: TrainConfig) -> dict[str, QM9Split]:
        opts = config.data
        root = Path(str(opts.get("root", "data/qm9"))).expanduser()
        standardise = opts.get("standardise", "train")
        if standardise not in _STANDARDISE:
            raise ValueError(f"data.standardise must be 'train' or 'all', got {standardise!r}")
        unknown = set(opts) - set(_OPTIONS)
        if unknown:
            raise ValueError(
                f"unknown QM9 data option(s) {sorted(unknown)}; options: {', '.join(_OPTIONS)}"
            )
        key = (str(root.resolve()), _stamp(root), opts.get("val_size", 10_000),
               opts.get("test_size", 10_000), opts.get("data_seed", 0), standardise,
               opts.get("max_molecules"))  # fmt: skip
        if key not in self._cache:  # a suite trains many methods on the same sets
            self._cache.clear()
            self._cache[key] = self._build(root, opts, standardise)
        splits, self._stats = self._cache[key]
        return splits

    def _build(
        self, root: Path, opts: Mapping[str, Any], standardise: str
    ) -> tuple[dict[str, QM9Split], tuple[Tensor, Tensor]]:
        dataset, source = load_qm9(root)
        index = split_indices(
            len(dataset), opts.get("val_size", 10_000), opts.get("test_size", 10_000),
            int(opts.get("data_seed", 0)), opts.get("max_molecules"), source,
        )  # fmt: skip
        y = dataset._data.y[:, list(TARGET_COLUMNS)].to(torch.float32)
        basis = index["train"] if standardise == "train" else torch.cat(list(index.values()))
        mean = y[basis].mean(dim=0)
        std = y[basis].std(dim=0)  # unbiased, as the reference
        flat = (~(std > 0)).nonzero()
        if flat.numel():
            k = int(flat[0, 0])
            raise DatasetError(
                f"{source}: target {QM9_TARGETS[k]} is constant over the {standardise} "
                "molecules; it cannot be standardised"
            )
        molecules = Molecules.from_dataset(dataset)
        splits = {
            name: QM9Split(molecules, idx, (y[idx] - mean) / std) for name, idx in index.items()
        }
        return splits, (mean, std)

    def num_batches(self, split: Any, batch_size: int) -> int:
        return -(-len(split) // batch_size)

    def batches(
        self, split: Any, batch_size: int, generator: torch.Generator | None, device: torch.device
    ) -> Iterator[Batch]:
        n = len(split)
        order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
        for start in range(0, n, batch_size):
            chunk = order[start : start + batch_size]
            graph = collate_complete(split.molecules, split.index[chunk])
            yield (graph.to(device), split.y[chunk].to(device))

    def shard(self, batch: Batch, rank: int, world: int) -> Batch:
        """This rank's contiguous share of the molecules of a batch (distributed training)."""
        graph, y = batch
        idx = torch.arange(y.shape[0]).tensor_split(world)[rank]
        first, stop = (int(idx[0]), int(idx[-1]) + 1) if idx.numel() else (0, 0)
        return (graph.graphs(first, stop), y[first:stop])

    # -- model, losses, metrics ----------------------------------------------------------

    def build_model(self, config: TrainConfig) -> QM9Net:
        hidden = config.data.get("hidden", 64)
        if isinstance(hidden, bool) or not isinstance(hidden, int) or hidden < 1:
            raise ValueError(f"data.hidden must be a positive int, got {hidden!r}")
        return QM9Net(self.num_tasks, dim=hidden)

    def inputs(self, batch: Batch) -> Any:
        return batch[0]

    def losses(self, outputs: Sequence[Tensor], batch: Batch) -> Tensor:
        y = batch[1]
        return torch.stack([F.mse_loss(out.reshape(-1), y[:, k]) for k, out in enumerate(outputs)])

    def new_metrics(self) -> list[TaskMetric]:
        if self._stats is None:
            raise RuntimeError("QM9.new_metrics needs the target statistics: call build_data first")
        mean, std = self._stats
        return [
            MAE(scale=1000.0 if k in MEV_TASKS else 1.0, mean=float(mean[k]), std=float(std[k]))
            for k in range(self.num_tasks)
        ]

    def update_metrics(
        self, metrics: Sequence[TaskMetric], outputs: Sequence[Tensor], batch: Batch
    ) -> None:
        y = batch[1]
        for k, (metric, out) in enumerate(zip(metrics, outputs)):
            metric.update(out.reshape(-1), y[:, k])

    def val_score(self, val: Mapping[str, float]) -> float:
        """``-Delta m%`` of the validation MAEs against the STL baseline (``QM9_STL_SPEC``).

        As the reference, model selection and the plateau schedule follow the validation
        Delta m (lower is better; the runner maximises this score). ``-inf`` when a value
        is not finite.
        """
        values = [val[f"{task.name}/mae"] for task in self.tasks]
        if not all(math.isfinite(v) for v in values):
            return -math.inf
        return -delta_m(values, QM9_STL_SPEC, [False] * len(values))


# ----------------------------------------------------------------------------------------
# fixture: a tiny dataset in the real on-disk format
# ----------------------------------------------------------------------------------------

# symbol -> (atomic number, valence, PyG's atom type index)
_ELEMENTS = {"H": (1, 1, 0), "C": (6, 4, 1), "N": (7, 3, 2), "O": (8, 2, 3), "F": (9, 1, 4)}
_ATOM_ENERGY_HA = {"H": -0.50, "C": -37.85, "N": -54.59, "O": -75.07, "F": -99.72}
_HAR2EV = 27.211386246  # Hartree -> eV, as PyG converts the CSV
_KCALMOL2EV = 0.04336414  # kcal/mol -> eV
_CSV_COLUMNS = (
    "mol_id,A,B,C,mu,alpha,homo,lumo,gap,r2,zpve,u0,u298,h298,g298,cv,u0_atom,u298_atom,"
    "h298_atom,g298_atom"
)
# PyG's unit conversion of the 19 targets after moving A, B, C to the end.
_CONVERSION = (1.0, 1.0, _HAR2EV, _HAR2EV, _HAR2EV, 1.0, _HAR2EV, _HAR2EV, _HAR2EV, _HAR2EV,
               _HAR2EV, 1.0, _KCALMOL2EV, _KCALMOL2EV, _KCALMOL2EV, _KCALMOL2EV, 1.0, 1.0, 1.0)  # fmt: skip
_BOND_LENGTH = {1: 1.50, 2: 1.33, 3: 1.20}


@dataclass
class _Molecule:
    symbols: list[str]
    bonds: list[tuple[int, int, int]]  # (atom, atom, order 1..3)
    pos_text: list[tuple[str, str, str]]  # coordinates as written in the SDF (%10.4f)
    smiles: str


def _unit(rng: random.Random) -> tuple[float, float, float]:
    while True:
        v = (rng.gauss(0, 1), rng.gauss(0, 1), rng.gauss(0, 1))
        norm = math.sqrt(sum(c * c for c in v))
        if norm > 1e-6:
            return (v[0] / norm, v[1] / norm, v[2] / norm)


def _place(rng: random.Random, coords: list[tuple[float, float, float]], parent: int,
           length: float, clearance: float) -> tuple[float, float, float]:  # fmt: skip
    """A point ``length`` from atom ``parent``, at least ``clearance`` from the others if possible."""
    best: tuple[float, float, float] = (0.0, 0.0, 0.0)
    best_gap = -1.0
    for _ in range(60):
        u = _unit(rng)
        p = tuple(c + length * d for c, d in zip(coords[parent], u))
        gap = min((math.dist(p, q) for i, q in enumerate(coords) if i != parent), default=9.9)
        if gap > best_gap:
            best, best_gap = (p[0], p[1], p[2]), gap
        if gap >= clearance:
            break
    return best


def _random_molecule(rng: random.Random, max_heavy: int) -> _Molecule:
    """A random valid molecule: a tree of C/N/O/F with single/double/triple bonds, saturated with H."""
    valence = {s: v for s, (_, v, _) in _ELEMENTS.items()}
    symbols = [rng.choice("CCCNO")]
    spare = [valence[symbols[0]]]
    bonds: list[tuple[int, int, int]] = []
    for i in range(1, rng.randint(1, max_heavy)):
        parents = [j for j in range(i) if spare[j] >= 1]
        if not parents:
            break
        sym = rng.choice("CCCCNNOF")
        j = rng.choice(parents)
        order = min(rng.choice((1, 1, 1, 2, 3)), spare[j], valence[sym])
        symbols.append(sym)
        spare.append(valence[sym] - order)
        spare[j] -= order
        bonds.append((j, i, order))
    heavy = len(symbols)
    for j in range(heavy):
        for _ in range(spare[j]):
            symbols.append("H")
            bonds.append((j, len(symbols) - 1, 1))
    coords: list[tuple[float, float, float]] = [(0.0, 0.0, 0.0)]
    for a, b, order in bonds:  # bonds come in the order of their child b, and a < b
        length = 1.09 if symbols[b] == "H" else _BOND_LENGTH[order]
        coords.append(_place(rng, coords, a, length, 0.95 if symbols[b] == "H" else 1.25))
    pos_text = [(f"{x:10.4f}", f"{y:10.4f}", f"{z:10.4f}") for x, y, z in coords]
    return _Molecule(symbols, bonds, pos_text, _smiles(symbols, bonds))


def _smiles(symbols: list[str], bonds: list[tuple[int, int, int]]) -> str:
    """A SMILES string with explicit hydrogens (the tree is written depth first)."""
    children: dict[int, list[tuple[int, int]]] = {i: [] for i in range(len(symbols))}
    for a, b, order in bonds:
        children[a].append((b, order))
    bond_symbol = {1: "", 2: "=", 3: "#"}

    def write(i: int) -> str:
        atom = "[H]" if symbols[i] == "H" else symbols[i]
        parts = [bond_symbol[o] + write(c) for c, o in children[i]]
        return atom + "".join(f"({p})" for p in parts[:-1]) + (parts[-1] if parts else "")

    return write(0)


def _targets_text(mol: _Molecule, rng: random.Random) -> list[str]:
    """The 19 CSV values (QM9's units: GHz, D, a0^3, Hartree, a0^2, cal/mol K, kcal/mol)."""
    heavy = sum(s != "H" for s in mol.symbols)
    hydrogens = len(mol.symbols) - heavy
    rot_a = 10 ** rng.uniform(0.0, 2.3)
    rot_b = rot_a * rng.uniform(0.3, 1.0)
    rot_c = rot_b * rng.uniform(0.5, 1.0)
    homo = rng.uniform(-0.35, -0.20)
    lumo = rng.uniform(-0.10, 0.10)
    u0_atom = -(95.0 * len(mol.bonds) + rng.uniform(0.0, 25.0))  # kcal/mol
    u0 = sum(_ATOM_ENERGY_HA[s] for s in mol.symbols) + u0_atom / 627.5095
    u298 = u0 + 0.0025 + 0.0001 * len(mol.symbols)
    h298 = u298 + 0.000944
    g298 = h298 - 0.024 - 0.002 * heavy
    values = [
        rot_a, rot_b, rot_c,
        rng.uniform(0.0, 4.0),  # mu
        4.0 + 8.0 * heavy + hydrogens + rng.gauss(0.0, 1.0),  # alpha
        homo, lumo, lumo - homo,
        30.0 + 120.0 * heavy + 10.0 * hydrogens + rng.uniform(0.0, 20.0),  # r2
        0.010 * hydrogens + 0.006 * heavy + rng.uniform(0.0, 0.002),  # zpve
        u0, u298, h298, g298,
        6.0 + 2.5 * heavy + 0.5 * hydrogens + rng.uniform(0.0, 1.0),  # cv
        u0_atom, u0_atom - 0.8 - 0.1 * len(mol.symbols), u0_atom - 1.4 - 0.1 * len(mol.symbols),
        u0_atom + 8.0 + 1.5 * heavy,
    ]  # fmt: skip
    return [f"{v:.9g}" for v in values]


def _sdf_block(name: str, mol: _Molecule) -> str:
    lines = [name, "     RDKit          3D", "",
             f"{len(mol.symbols):3d}{len(mol.bonds):3d}  0  0  0  0  0  0  0  0999 V2000"]  # fmt: skip
    for sym, (x, y, z) in zip(mol.symbols, mol.pos_text):
        lines.append(f"{x}{y}{z} {sym:<3} 0" + "  0" * 11)
    for a, b, order in mol.bonds:
        lines.append(f"{a + 1:3d}{b + 1:3d}{order:3d}  0")
    lines += ["M  END", "$$$$"]
    return "\n".join(lines) + "\n"


def _pyg_record(mol: _Molecule, values: list[str], name: str, idx: int) -> dict[str, Any]:
    """One molecule as PyG's QM9 stores it (the keys and dtypes of its ``process()``)."""
    n = len(mol.symbols)
    z = torch.tensor([_ELEMENTS[s][0] for s in mol.symbols], dtype=torch.long)
    pos = torch.tensor([[float(c) for c in p] for p in mol.pos_text], dtype=torch.float)
    rows, cols, kinds = [], [], []
    for a, b, order in mol.bonds:
        rows += [a, b]
        cols += [b, a]
        kinds += [order - 1, order - 1]
    edge_index = torch.tensor([rows, cols], dtype=torch.long)
    edge_type = torch.tensor(kinds, dtype=torch.long)
    perm = (edge_index[0] * n + edge_index[1]).argsort()
    edge_index, edge_type = edge_index[:, perm], edge_type[perm]
    edge_attr = F.one_hot(edge_type, NUM_BOND_TYPES).to(torch.float)
    is_h = (z == 1).to(torch.float)
    num_hs = torch.zeros(n).index_add_(0, edge_index[1], is_h[edge_index[0]])
    type_onehot = F.one_hot(torch.tensor([_ELEMENTS[s][2] for s in mol.symbols]), 5).to(torch.float)
    # atomic number, aromatic, sp, sp2, sp3, number of H neighbours; PyG reads the SDF with
    # rdkit's sanitize=False, which leaves aromaticity and hybridization unset (all zero).
    zeros = torch.zeros(n)
    rest = torch.stack([z.to(torch.float), zeros, zeros, zeros, zeros, num_hs], dim=1)
    raw = torch.tensor([[float(v) for v in values]], dtype=torch.float)
    y = torch.cat([raw[:, 3:], raw[:, :3]], dim=-1) * torch.tensor(_CONVERSION).view(1, -1)
    return {
        "x": torch.cat([type_onehot, rest], dim=-1),
        "z": z,
        "pos": pos,
        "edge_index": edge_index,
        "smiles": mol.smiles,
        "edge_attr": edge_attr,
        "y": y,
        "name": name,
        "idx": idx,
    }


def write_fixture(
    root: str | Path, num_molecules: int = 30, *, seed: int = 0, sdf: bool = True,
    max_heavy_atoms: int = 5,
) -> Path:  # fmt: skip
    """Write a tiny QM9 in PyG's on-disk format under ``root``; return ``root``.

    Writes ``root/raw/qm9_v3.pt``: a ``torch.save``d list of ``num_molecules`` dicts with
    the keys and dtypes of PyG's QM9 ``process()`` (``x`` float32 (atoms, 11), ``z`` int64,
    ``pos`` float32 (atoms, 3), ``edge_index`` int64 (2, 2*bonds) sorted, ``edge_attr``
    float32 one-hot (2*bonds, 4), ``y`` float32 (1, 19) in PyG's units, ``smiles``,
    ``name`` ``"gdb_<n>"``, ``idx``), which PyG reads when rdkit is not installed. With
    ``sdf=True`` (default) also the raw triplet PyG reads with rdkit: ``gdb9.sdf`` (V2000
    molfiles), ``gdb9.sdf.csv`` (QM9's 19 properties in their original units) and
    ``uncharacterized.txt``, holding one more molecule listed as uncharacterized, which
    ``qm9_v3.pt`` leaves out as PyG does. Molecules are random, valid trees of 1 to
    ``max_heavy_atoms`` C/N/O/F atoms saturated with hydrogens, with plausible geometry
    and targets that depend on the composition.
    """
    if isinstance(num_molecules, bool) or not isinstance(num_molecules, int) or num_molecules < 1:
        raise ValueError(f"num_molecules must be a positive int, got {num_molecules!r}")
    if not isinstance(max_heavy_atoms, int) or max_heavy_atoms < 1:
        raise ValueError(f"max_heavy_atoms must be a positive int, got {max_heavy_atoms!r}")
    root = Path(root)
    raw = root / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    skipped = min(2, num_molecules)  # SDF index of the uncharacterized molecule
    total = num_molecules + 1 if sdf else num_molecules
    records, blocks, rows, smiles = [], [], [], []
    for i in range(total):
        mol = _random_molecule(rng, max_heavy_atoms)
        smiles.append(mol.smiles)
        values = _targets_text(mol, rng)
        name = f"gdb_{i + 1}"
        blocks.append(_sdf_block(name, mol))
        rows.append(",".join([name, *values]))
        if not (sdf and i == skipped):
            records.append(_pyg_record(mol, values, name, i))
    torch.save(records, raw / RAW_PT)
    if sdf:
        (raw / "gdb9.sdf").write_text("".join(blocks))
        (raw / "gdb9.sdf.csv").write_text("\n".join([_CSV_COLUMNS, *rows]) + "\n")
        header = [
            " Molecules of this fixture that are marked uncharacterized (their geometry",
            " failed the consistency check); torch_geometric's QM9 leaves them out.",
            " Format as QM9's uncharacterized.txt: nine header lines, one molecule per line",
            " (1-based index first), then a closing line.",
            "",
            " Index   SMILES",
            "",
            "",
            " ------------------------------------------------------------------------",
        ]
        entry = f"  {skipped + 1:7d}   {smiles[skipped]}"
        footer = " ------------------------------------------------------------------------"
        (raw / "uncharacterized.txt").write_text("\n".join([*header, entry, footer]) + "\n")
    return root


def _stamp(root: Path) -> tuple[tuple[str, int, int], ...]:
    """Sizes and modification times of the data files (a rewritten file invalidates the cache).

    The raw files when there are any (PyG writes the processed file on first load, which
    must not make the next run reload), else the processed file.
    """
    raw = [root / "raw" / RAW_PT, *(root / "raw" / name for name in RAW_SDF)]
    files = [p for p in raw if p.is_file()] or [root / "processed" / PROCESSED]
    return tuple(
        (p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in files if p.is_file()
    )


BENCHMARK = QM9()
