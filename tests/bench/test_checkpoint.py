"""Checkpoints are written atomically and refuse files that are broken or not theirs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from fairmtl.bench.checkpoint import CheckpointError, checkpoint_path, load_checkpoint, save_atomic


def test_round_trip_and_safe_file_names(tmp_path: Path) -> None:
    path = checkpoint_path(tmp_path, "multimnist/fairgrad:alpha=2/cpu[epochs=3]/seed0")
    assert path.parent == tmp_path and "/" not in path.name
    save_atomic({"key": "k", "x": torch.arange(3)}, path)
    state = load_checkpoint(path, "k")
    assert state is not None and torch.equal(state["x"], torch.arange(3))
    assert load_checkpoint(tmp_path / "absent.pt", "k") is None


def test_a_crash_while_writing_keeps_the_previous_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "run.pt"
    save_atomic({"key": "k", "epoch": 1}, path)
    before = path.read_bytes()

    def dies_half_way(obj: object, f: object) -> None:
        f.write(b"half a checkpoint")  # type: ignore[attr-defined]
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", dies_half_way)
    with pytest.raises(OSError, match="disk full"):
        save_atomic({"key": "k", "epoch": 2}, path)
    assert path.read_bytes() == before
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left behind


def test_unreadable_or_foreign_checkpoints_are_refused(tmp_path: Path) -> None:
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match=r"broken\.pt.*--restart"):
        load_checkpoint(broken, "k")
    assert broken.read_bytes() == b"not a checkpoint"
    other = tmp_path / "other.pt"
    save_atomic({"key": "another run"}, other)
    with pytest.raises(CheckpointError, match="belongs to run 'another run'"):
        load_checkpoint(other, "k")
