"""Atomic checkpoints: a crash while writing never leaves a broken or half-written file.

The new checkpoint is written to a temporary file in the same folder, flushed to disk,
then renamed over the old one (``os.replace`` is atomic on POSIX and Windows), so the
file on disk is always either the previous complete checkpoint or the new one.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import torch


class CheckpointError(RuntimeError):
    """A checkpoint cannot be read or belongs to another run; the message names the file."""


def checkpoint_path(folder: str | Path, key: str) -> Path:
    """The checkpoint file of the run ``key`` (a readable, filesystem-safe name)."""
    slug = re.sub(r"[^A-Za-z0-9._=-]+", "_", key).strip("_")
    return Path(folder) / f"{slug}.pt"


def save_atomic(state: dict[str, Any], path: str | Path) -> None:
    """``torch.save(state, path)`` so that ``path`` is always a complete checkpoint."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    try:  # make the rename itself durable
        fd = os.open(path.parent, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory handles
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def load_checkpoint(path: str | Path, key: str) -> dict[str, Any] | None:
    """The checkpoint at ``path`` (``None`` if there is none), checked to belong to run ``key``.

    Checkpoints hold the methods' Python state, so they are loaded with
    ``weights_only=False``: only load checkpoints this library wrote.
    """
    path = Path(path)
    if not path.exists():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # any unreadable file gets the same clear error
        raise CheckpointError(
            f"checkpoint {path} cannot be read ({type(exc).__name__}: {exc}); "
            "move it away or run again with --restart to train this run from scratch"
        ) from exc
    if not isinstance(state, dict) or state.get("key") != key:
        found = state.get("key") if isinstance(state, dict) else type(state).__name__
        raise CheckpointError(
            f"checkpoint {path} belongs to run {found!r}, not {key!r}; "
            "move it away or run again with --restart"
        )
    return state
