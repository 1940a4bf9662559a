"""Peak memory and step time of the blockwise Jacobian (``Balancer(max_jacobian_bytes=...)``).

On the CelebA shape of ``speed_suite.py`` (CelebA CNN, K = 40, 5.2 M shared parameters:
a float32 Jacobian of 829 MB), one FairGrad step per row with the whole Jacobian and with
smaller bounds. Each row runs in a forked child of a process that has imported everything:
the child builds the workload, takes one untimed step (Adam's state, allocator warm-up),
resets its peak RSS (``VmHWM``, Linux) and then times ``--steps`` steps; the table gives
the increase of the peak RSS over those steps and the median step time.

Command line (from the repository root)::

    PYTHONPATH=src python benchmarks/blockwise_memory.py [--budgets-mb 0 400 100 25]
        [--shape celeba] [--steps 2] [--threads 1] [--out FILE]

A budget of 0 means no bound (the whole Jacobian). ``--out`` writes the Markdown table.
"""

from __future__ import annotations

import argparse
import gc
import multiprocessing
import platform
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from speed_suite import (
    SHAPES,
    Settings,
    _reset_peak_rss,
    build_workload,
    peak_rss_kib,
)

import fairmtl
from fairmtl.jacobian import input_blocks

SETTINGS = Settings(
    lenet_batch=256, celeba_batch=2, segnet_batch=2, segnet_size=(64, 96), segnet_width_div=8,
    seed=0,
)  # fmt: skip


def _step(workload: Any, balancer: fairmtl.Balancer) -> None:
    workload.optimizer.zero_grad(set_to_none=True)
    losses = torch.stack(workload.losses(workload.model(workload.x)))
    balancer.backward(losses, shared=workload.shared, task_params=workload.heads)
    workload.optimizer.step()


def measure(budget: int | None, steps: int, threads: int, shape: str = "celeba") -> dict[str, Any]:
    """One row, in the calling process: peak RSS increase (MiB) and median step time (s)."""
    torch.set_num_threads(threads)
    workload = build_workload(shape, SETTINGS, torch.device("cpu"))
    balancer = fairmtl.Balancer("fairgrad", max_jacobian_bytes=budget)
    blocks = 1 if budget is None else len(input_blocks(workload.shared, workload.k, budget))
    _step(workload, balancer)
    gc.collect()
    _reset_peak_rss()
    before, source = peak_rss_kib()
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        _step(workload, balancer)
        times.append(time.perf_counter() - t0)
    after, _ = peak_rss_kib()
    m = sum(p.numel() for p in workload.shared)
    return {
        "shape": workload.description,
        "budget": budget,
        "blocks": blocks,
        "jacobian_mb": workload.k * m * 4 / 1e6,
        "increase_mib": max(0.0, after - before) / 1024.0,
        "step_s": statistics.median(times),
        "source": source,
    }


def _child(budget: int | None, steps: int, threads: int, shape: str, queue: Any) -> None:
    queue.put(measure(budget, steps, threads, shape))


def run(
    budgets: Sequence[int | None], steps: int, threads: int, shape: str = "celeba"
) -> list[dict[str, Any]]:
    """One forked child per budget (a fresh peak for each)."""
    ctx = multiprocessing.get_context("fork")
    rows = []
    for budget in budgets:
        queue = ctx.Queue()
        proc = ctx.Process(target=_child, args=(budget, steps, threads, shape, queue))
        proc.start()
        row = queue.get()
        proc.join()
        rows.append(row)
        print(f"[blockwise] {row}", file=sys.stderr)
    return rows


def table(rows: Sequence[dict[str, Any]], command: str) -> str:
    base = next((r for r in rows if r["budget"] is None), None)
    lines = [
        f"Command: `{command}`  ",
        (
            f"torch {torch.__version__}, Python {platform.python_version()}, "
            f"CPU {platform.processor() or platform.machine()}; peak from {rows[0]['source']}"
        ),
        "",
        (
            f"{rows[0]['shape']}; FairGrad; the whole Jacobian is "
            f"{rows[0]['jacobian_mb']:.1f} MB (float32)."
        ),
        "",
        "| max_jacobian_bytes | blocks | peak RSS increase (MiB) | step (s) | step ÷ whole |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        bound = "None (whole Jacobian)" if r["budget"] is None else f"{r['budget'] / 1e6:g} MB"
        ratio = "-" if base is None else f"{r['step_s'] / base['step_s']:.2f}"
        lines.append(
            f"| {bound} | {r['blocks']} | {r['increase_mib']:.0f} | {r['step_s']:.2f} | {ratio} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budgets-mb", type=float, nargs="+", default=[0, 400, 100, 25])
    parser.add_argument("--shape", choices=SHAPES, default="celeba")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    if args.steps < 1 or args.threads < 1 or any(b < 0 for b in args.budgets_mb):
        parser.error("--steps and --threads must be >= 1 and budgets >= 0")
    budgets = [None if b == 0 else int(b * 1e6) for b in args.budgets_mb]
    rows = run(budgets, args.steps, args.threads, args.shape)
    command = "PYTHONPATH=src python benchmarks/blockwise_memory.py " + " ".join(
        sys.argv[1:] if argv is None else argv
    )
    text = table(rows, command.strip())
    print(text)
    if args.out is not None:
        args.out.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
