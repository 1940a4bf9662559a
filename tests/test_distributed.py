"""Two processes (gloo, CPU) train exactly like one process on the concatenated batches.

Every registered method that supports distributed training is discovered from the
registry (random ones seeded identically on both ranks); after several steps (with an
epoch boundary and FAMO-style post-step observations) the parameters on both ranks are
identical and equal to the single-process run on the union of the batches to 1e-6.
"""

from __future__ import annotations

import inspect
import os
import socket
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.multiprocessing as mp
from torch import nn

import fairmtl
from fairmtl._registry import lookup
from fairmtl.aggregators.base import Aggregator
from fairmtl.weighting.base import Weighting

if not torch.distributed.is_available():  # pragma: no cover
    pytest.skip("torch.distributed is not available", allow_module_level=True)

K, WORLD, PER_RANK, STEPS = 3, 2, 6, 4


def _methods() -> list[str]:
    out = []
    for name in fairmtl.available():
        cls = lookup(name)
        if issubclass(cls, Weighting) and not cls.requires_graph or issubclass(cls, Aggregator) and not cls.features_only:
            out.append(name)
    return out


def _make(name: str) -> fairmtl.Balancer:
    cls = lookup(name)
    kwargs: dict[str, Any] = {"seed": 0} if "seed" in inspect.signature(cls).parameters else {}
    method = cls(**kwargs)
    if isinstance(method, Aggregator):
        return fairmtl.Balancer(aggregator=method, num_tasks=K)
    return fairmtl.Balancer(weighting=method, num_tasks=K)


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.encoder = nn.Sequential(nn.Linear(5, 16), nn.Tanh(), nn.Linear(16, 8), nn.Tanh())
        self.heads = nn.ModuleList(nn.Linear(8, 1) for _ in range(K))
        self.double()

    def losses(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        z = self.encoder(x)
        return torch.stack([((h(z).squeeze(1) - y[:, i]) ** 2).mean() for i, h in enumerate(self.heads)])


def _data() -> list[tuple[torch.Tensor, torch.Tensor]]:
    gen = torch.Generator().manual_seed(1)
    n = WORLD * PER_RANK
    scales = torch.tensor([1.0, 10.0, 0.1], dtype=torch.float64)  # unequal task scales
    return [
        (torch.randn(n, 5, generator=gen, dtype=torch.float64),
         torch.randn(n, K, generator=gen, dtype=torch.float64) * scales + 2.0)
        for _ in range(STEPS)
    ]  # fmt: skip


def _train(name: str, rank: int | None) -> torch.Tensor:
    """Parameters after STEPS steps; ``rank=None``: one process on the whole batches."""
    net = Net()
    balancer = _make(name)
    opt = torch.optim.SGD(net.parameters(), lr=0.05)
    for step, (x, y) in enumerate(_data()):
        if rank is not None:
            x, y = x[rank * PER_RANK : (rank + 1) * PER_RANK], y[rank * PER_RANK : (rank + 1) * PER_RANK]
        opt.zero_grad()
        balancer.backward(net.losses(x, y), shared=net.encoder.parameters(),
                          task_params=net.heads.parameters())  # fmt: skip
        opt.step()
        if balancer.needs_observe:
            with torch.no_grad():
                balancer.observe(net.losses(x, y))
        if step == 1:
            balancer.end_epoch()
    return torch.cat([p.detach().reshape(-1) for p in net.parameters()])


def _count_bytes(calls: list[int]) -> Any:
    original = torch.distributed.all_reduce

    def counting(tensor: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        calls.append(tensor.numel() * tensor.element_size())
        return original(tensor, *args, **kwargs)

    return original, counting


def _worker(rank: int, folder: str, methods: list[str], port: int) -> None:
    torch.set_num_threads(1)
    torch.distributed.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD
    )
    try:
        for name in methods:
            torch.save(_train(name, rank), f"{folder}/{name}.{rank}.pt")
        _misuse_checks(rank, folder, methods)
        _communication(rank, folder, methods)
    finally:
        torch.distributed.destroy_process_group()
    # Every result is on disk. Leave without the interpreter's and C++'s exit-time
    # destructors: on CI a gloo worker aborted (SIGABRT, "terminate called without an
    # active exception"), most likely in that teardown, which is torch's and not what this
    # test checks (never reproduced here). A failure above still raises and is reported.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _misuse_checks(rank: int, folder: str, methods: list[str]) -> None:
    errors: dict[str, str] = {}
    net = Net()
    x, y = _data()[0]
    # 1. The model wrapped in DDP: its gradients would be averaged before aggregation.
    wrapped = nn.parallel.DistributedDataParallel(net)
    try:
        _make(methods[0]).backward(net.losses(x, y), shared=wrapped.module.encoder.parameters())
    except TypeError as exc:
        errors["ddp"] = str(exc)
    del wrapped
    # 2. Methods built differently on the ranks (an unseeded random method, say).
    seeded = next(m for m in methods if "seed" in inspect.signature(lookup(m)).parameters)
    cls = lookup(seeded)
    method = cls(seed=rank)
    balancer = fairmtl.Balancer(**{"aggregator" if isinstance(method, Aggregator) else "weighting": method})
    try:
        balancer.backward(net.losses(x, y), shared=net.encoder.parameters())
    except RuntimeError as exc:
        errors["state"] = str(exc)
    # 3. Features mode: each rank's representation holds other samples.
    z = net.encoder(x)
    losses = torch.stack([((h(z).squeeze(1) - y[:, i]) ** 2).mean() for i, h in enumerate(net.heads)])
    try:
        _make(methods[0]).backward(losses, features=z)
    except NotImplementedError as exc:
        errors["features"] = str(exc)
    torch.save(errors, f"{folder}/errors.{rank}.pt")


def _communication(rank: int, folder: str, methods: list[str]) -> None:
    """Bytes all-reduced in one (second) step, for each method."""
    out = {}
    for name in methods:
        net = Net()
        balancer = _make(name)
        x, y = _data()[0]
        x, y = x[rank * PER_RANK : (rank + 1) * PER_RANK], y[rank * PER_RANK : (rank + 1) * PER_RANK]
        balancer.backward(net.losses(x, y), shared=net.encoder.parameters(),
                          task_params=net.heads.parameters())  # fmt: skip
        if balancer.needs_observe:
            balancer.observe(net.losses(x, y).detach())
        calls: list[int] = []
        original, counting = _count_bytes(calls)
        torch.distributed.all_reduce = counting
        try:
            balancer.backward(net.losses(x, y), shared=net.encoder.parameters(),
                              task_params=net.heads.parameters())  # fmt: skip
        finally:
            torch.distributed.all_reduce = original
        out[name] = calls
    torch.save(out, f"{folder}/comm.{rank}.pt")


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    folder = tmp_path_factory.mktemp("dist")
    methods = _methods()
    mp.start_processes(_worker, args=(str(folder), methods, _free_port()), nprocs=WORLD,
                       start_method="spawn")  # fmt: skip
    return folder, methods


def test_two_ranks_equal_one_process_on_the_union(runs: tuple[Path, list[str]]) -> None:
    folder, methods = runs
    assert len(methods) >= 20
    worst = 0.0
    for name in methods:
        r0 = torch.load(folder / f"{name}.0.pt")
        r1 = torch.load(folder / f"{name}.1.pt")
        assert torch.equal(r0, r1), f"{name}: the ranks diverged"
        single = _train(name, None)
        diff = float((r0 - single).abs().max())
        worst = max(worst, diff)
        assert diff <= 1e-6, f"{name}: distributed differs from one process by {diff:.2e}"
        assert not torch.equal(single, _initial()), f"{name}: no step was taken"
    print(f"max |distributed - single| over {len(methods)} methods: {worst:.2e}")


def _initial() -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in Net().parameters()])


def test_misuse_raises_clear_errors(runs: tuple[Path, list[str]]) -> None:
    folder, _ = runs
    for rank in range(WORLD):
        errors = torch.load(folder / f"errors.{rank}.pt")
        assert "DistributedDataParallel" in errors["ddp"]
        assert "differs across ranks" in errors["state"]
        assert "features mode is not supported" in errors["features"]


def test_communication_per_step(runs: tuple[Path, list[str]]) -> None:
    """LS-like methods reduce m + m_heads + K numbers (as DDP: m + m_heads); Jacobian
    methods K * m + m_heads + K (float64 here: 8 bytes each)."""
    folder, methods = runs
    comm = torch.load(folder / "comm.0.pt")
    net = Net()
    m = sum(p.numel() for p in net.encoder.parameters())
    m_heads = sum(p.numel() for p in net.heads.parameters())
    for name in methods:
        fixed = _make(name).aggregator.fixed_weights(K) is not None
        expected = (m + m_heads + K) * 8 if fixed else (K * m + m_heads + K) * 8
        assert sum(comm[name]) == expected, (name, comm[name])
