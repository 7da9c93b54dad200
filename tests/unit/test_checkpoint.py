"""Checkpoints are written atomically and bad files give clear errors."""

import os

import pytest
import torch

from core.checkpoint import atomic_torch_save, config_from_checkpoint, load_checkpoint
from core.errors import CheckpointError


def test_atomic_save_replaces_and_leaves_no_temp(tmp_path):
    path = tmp_path / "ckpt" / "last.ckpt"
    atomic_torch_save({"a": torch.ones(2)}, path)
    atomic_torch_save({"a": torch.zeros(2)}, path)
    assert torch.equal(load_checkpoint(path)["a"], torch.zeros(2))
    assert os.listdir(path.parent) == ["last.ckpt"]


def test_interrupted_save_keeps_old_file(tmp_path, monkeypatch):
    path = tmp_path / "last.ckpt"
    atomic_torch_save({"a": 1}, path)

    def boom(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(KeyboardInterrupt):
        atomic_torch_save({"a": 2}, path)
    monkeypatch.undo()
    assert load_checkpoint(path)["a"] == 1
    assert os.listdir(tmp_path) == ["last.ckpt"]


def test_missing_and_garbage_files(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "nope.ckpt")
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="bad.ckpt"):
        load_checkpoint(bad)
    with pytest.raises(CheckpointError, match="no suite run config"):
        config_from_checkpoint({"state_dict": {}}, bad)
