"""Host reads (accelerator synchronisations) in the hot path of every Gramian weighting.

On an accelerator, every read of a tensor's value on the host waits for the device to
finish its queue: ``bool()``, ``float()``, ``int()``, ``.item()``, ``.tolist()``,
``nonzero``, ``torch.equal``, boolean-mask indexing, copies to the CPU, and the linear
algebra calls that check their error codes (``linalg.cholesky``, ``solve``, ``inv``,
``eigh``, ``lu_factor``; their ``_ex`` forms do not). This script counts them in one
``weights(gram)`` call of each registered Gramian weighting, and in one whole
``Balancer.backward`` step (the Jacobian, its checks, the weights and ``J^T w``) on a
small multi-task MLP, two ways:

- on every device, a :class:`torch.overrides.TorchFunctionMode` counts the calls above by
  name (an exact count of the code's host reads, whatever the device);
- on CUDA, ``torch.cuda.set_sync_debug_mode("warn")`` also counts the synchronisations
  the CUDA runtime itself reports (the issue's check).

On the CPU, where a host read costs nothing, several solvers deliberately read scalars on
the host (their ``check_every=1`` CPU paths). Their accelerator paths are timed as extra
rows with ``check_every=4`` (FairGrad / Nash-MTL's Newton, the interior points of MGDA,
UPGrad and CAGrad's dual): those
are the counts a GPU run of ``weights(gram)`` makes, while the plain rows on a CPU show the
CPU path.

Command (from the repository root)::

    PYTHONPATH=src python benchmarks/host_reads.py --out docs/host_reads.md
        [--ks 10 40] [--device cpu|cuda] [--seed 0]
"""

from __future__ import annotations

import argparse
import datetime as _dt
import platform
import warnings
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

import fairmtl
from fairmtl._registry import lookup
from fairmtl.aggregators.base import GramianWeighting
from fairmtl.solvers import min_norm_simplex
from fairmtl.solvers.alpha_fair import solve_alpha_fair
from fairmtl.solvers.cagrad import solve_cagrad_dual
from fairmtl.solvers.dual_cone import project_dual_cone

HOST_READS = frozenset(
    {
        "__bool__", "__float__", "__int__", "__index__", "item", "tolist", "nonzero",
        "argwhere", "equal", "cpu", "numpy", "masked_select", "unique",
        "linalg_cholesky", "linalg_solve", "linalg_inv", "linalg_eigh", "linalg_eigvalsh",
        "linalg_lu_factor",
    }
)  # fmt: skip
"""Names (``func.__name__`` under a TorchFunctionMode) of the calls that read device values
on the host."""


class HostReadCounter(TorchFunctionMode):
    """Counts, by name, the torch calls in :data:`HOST_READS` made inside the mode, and
    boolean-mask indexing (``x[mask]``, a ``nonzero`` inside)."""

    def __init__(self) -> None:
        super().__init__()
        self.counts: Counter[str] = Counter()

    def __torch_function__(
        self, func: Any, types: Any, args: Sequence[Any] = (), kwargs: Any = None
    ) -> Any:
        name = getattr(func, "__name__", "")
        if name in HOST_READS:
            self.counts[name] += 1
        elif name in ("__getitem__", "__setitem__") and _has_bool_index(args):
            self.counts[f"{name}[bool]"] += 1
        return func(*args, **(kwargs or {}))


def _has_bool_index(args: Sequence[Any]) -> bool:
    index = args[1] if len(args) > 1 else None
    items = index if isinstance(index, tuple) else (index,)
    return any(isinstance(x, Tensor) and x.dtype == torch.bool for x in items)


def count_host_reads(
    call: Callable[[], object], device: torch.device
) -> tuple[Counter[str], int | None]:
    """The host reads :class:`HostReadCounter` sees in ``call()``, and on CUDA the number of
    synchronisations ``torch.cuda.set_sync_debug_mode("warn")`` reports (else None)."""
    syncs = None
    with HostReadCounter() as counter:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                torch.cuda.set_sync_debug_mode("warn")
                try:
                    call()
                finally:
                    torch.cuda.set_sync_debug_mode("default")
            syncs = sum("synchroniz" in str(w.message) for w in caught)
        else:
            call()
    return counter.counts, syncs


@dataclass(frozen=True)
class Row:
    """One measured call: what, at which K, the host reads by name and the CUDA count."""

    what: str
    k: int
    counts: Counter[str]
    cuda_syncs: int | None

    @property
    def total(self) -> int:
        return sum(self.counts.values())


def gramian_methods() -> list[str]:
    """Registered Gramian weightings (not the features-only ones, e.g. MGDA-UB)."""
    names = []
    for name in fairmtl.available():
        cls = lookup(name)
        if issubclass(cls, GramianWeighting) and not getattr(cls, "features_only", False):
            names.append(name)
    return sorted(names)


def random_gram(k: int, device: torch.device, seed: int) -> Tensor:
    """``G G^T`` of K Gaussian rows of length 512 with per-task scales ``10^U[-1, 1]``."""
    gen = torch.Generator().manual_seed(seed * 1000 + k)
    g = torch.randn(k, 512, generator=gen, dtype=torch.float64)
    g *= 10.0 ** (2.0 * torch.rand(k, 1, generator=gen, dtype=torch.float64) - 1.0)
    return (g @ g.T).to(device)


class _MultiTaskMLP(nn.Module):
    def __init__(self, k: int) -> None:
        super().__init__()
        self.shared = nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 32), nn.ReLU())
        self.heads = nn.ModuleList(nn.Linear(32, 1) for _ in range(k))

    def forward(self, x: Tensor) -> list[Tensor]:
        z = self.shared(x)
        return [head(z).squeeze(1) for head in self.heads]


def balancer_step(name: str, k: int, device: torch.device, seed: int) -> Callable[[], object]:
    """One ``Balancer.backward`` step of ``name`` on a small K-task MLP (batch 32), with the
    README's loop: ``torch.stack`` of the K losses, shared and task parameters."""
    torch.manual_seed(seed)
    model = _MultiTaskMLP(k).to(device)
    x = torch.randn(32, 16, device=device)
    y = torch.randn(32, k, device=device)
    balancer = fairmtl.Balancer(fairmtl.make(name))

    def step() -> object:
        model.zero_grad(set_to_none=True)
        outs = model(x)
        losses = torch.stack([((o - y[:, i]) ** 2).mean() for i, o in enumerate(outs)])
        return balancer.backward(losses, shared=model.shared, task_params=model.heads)

    step()  # warm-up (lazy state, first-call caches)
    return step


def measure(ks: Sequence[int], device: torch.device, seed: int) -> list[Row]:
    rows: list[Row] = []
    methods = gramian_methods()
    for k in ks:
        gram = random_gram(k, device, seed)
        for name in methods:
            agg = fairmtl.make(name)
            agg.weights(gram)  # warm-up
            rows.append(
                Row(
                    f"{name}: weights(gram)",
                    k,
                    *count_host_reads(lambda a=agg, g=gram: a.weights(g), device),
                )
            )
        forced = {
            "fairgrad / nash-mtl solver, check_every=4 (accelerator path)": lambda g=gram: (
                solve_alpha_fair(g, 2.0, check_every=4)
            ),
            "mgda solver, check_every=4 (accelerator path)": lambda g=gram: min_norm_simplex(
                g, check_every=4
            ),
            "upgrad solver, check_every=4 (accelerator path)": lambda g=gram: project_dual_cone(
                g, check_every=4
            ),
            "cagrad solver, check_every=4 (accelerator path)": lambda g=gram: solve_cagrad_dual(
                g, 0.4, check_every=4
            ),
        }
        for what, call in forced.items():
            rows.append(Row(what, k, *count_host_reads(call, device)))
        for name in methods:
            step = balancer_step(name, k, device, seed)
            rows.append(Row(f"{name}: Balancer.backward step", k, *count_host_reads(step, device)))
    return rows


def table(rows: Sequence[Row], cuda: bool) -> str:
    head = "| call | K | host reads | by kind |" + (" CUDA syncs reported |" if cuda else "")
    sep = "|---|---:|---:|---|" + ("---:|" if cuda else "")
    lines = [head, sep]
    for r in rows:
        kinds = ", ".join(f"{n} {c}" for n, c in r.counts.most_common()) or "-"
        line = f"| {r.what} | {r.k} | {r.total} | {kinds} |"
        if cuda:
            line += f" {r.cuda_syncs} |"
        lines.append(line)
    return "\n".join(lines)


def report(rows: Sequence[Row], argv: Sequence[str], device: torch.device) -> str:
    date = _dt.datetime.now().astimezone().isoformat(timespec="seconds")
    dev = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    cmd = " ".join(["python", "benchmarks/host_reads.py", *argv])
    return (
        "# Host reads in the hot path of the Gramian weightings\n\n"
        f"Command: `PYTHONPATH=src {cmd}`  \n"
        f"fairmtl {fairmtl.__version__}, torch {torch.__version__}, Python "
        f"{platform.python_version()}; device: {dev}  \n"
        f"Date: {date}\n\n"
        "Host reads counted by name in one call (see the script's docstring); on a CPU the "
        "plain rows are the CPU paths, which read scalars on the host on purpose.\n\n"
        + table(rows, device.type == "cuda")
        + "\n"
    )


def main(argv: Sequence[str] | None = None) -> int:
    import sys

    argv = list(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    p.add_argument("--ks", type=int, nargs="+", default=[10, 40])
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=None, help="write the Markdown report here")
    args = p.parse_args(argv)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if any(k < 2 for k in args.ks):
        p.error(f"--ks must be at least 2, got {args.ks}")
    text = report(measure(args.ks, device, args.seed), argv, device)
    print(text)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
