"""A training run for the resume tests: optionally kills itself with SIGKILL mid-epoch.

Usage: python run_resumable.py DB CHECKPOINTS METHOD [EPOCH:STEP]
With EPOCH:STEP (0-based epoch, 1-based step) the process sends itself SIGKILL right
after that optimizer step, as a crash or ``kill -9`` would.
"""

from __future__ import annotations

import os
import signal
import sys

from fairmtl.bench.runner import train

OVERRIDES = {
    "epochs": 3,
    "batch_size": 64,
    "threads": 1,
    "data.train_pairs": 640,
    "data.val_pairs": 200,
    "data.test_pairs": 200,
}


def main() -> None:
    db, checkpoints, method = sys.argv[1:4]
    kill_at = tuple(int(v) for v in sys.argv[4].split(":")) if len(sys.argv) > 4 else None

    def on_step(epoch: int, step: int) -> None:
        if (epoch, step) == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)

    train("multimnist", method, "cpu", seed=3, overrides=OVERRIDES, store=db,
          checkpoints=checkpoints, progress=False, log=None, on_step=on_step)  # fmt: skip


if __name__ == "__main__":
    main()
