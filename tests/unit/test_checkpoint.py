"""Checkpoints are written atomically, a full disk keeps the previous file, bad files give clear errors, and
ckpt_path=last / a run folder resolves to the newest intact checkpoint."""

import errno
import logging
import os

import pytest
import torch

from core.checkpoint import (
    AtomicCheckpointIO,
    atomic_torch_save,
    checkpoint_problem,
    config_from_checkpoint,
    load_checkpoint,
    resolve_ckpt_path,
)
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


# -- a failed write keeps the previous checkpoint ---------------------------------------------------------------
def _disk_full_after_some_bytes(obj, f, *args, **kwargs):
    f.write(b"PK\x03\x04 half a checkpoint")
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


@pytest.mark.parametrize("fail_in", ["torch.save", "os.replace"])
def test_disk_full_keeps_previous_checkpoint_and_goes_on(tmp_path, monkeypatch, caplog, fail_in):
    path = tmp_path / "checkpoints" / "last.ckpt"
    io = AtomicCheckpointIO(on_write_error="continue")
    io.save_checkpoint({"step": 1}, path)
    older = tmp_path / "checkpoints" / "step0000001.ckpt"
    io.save_checkpoint({"step": 1}, older)
    if fail_in == "torch.save":
        monkeypatch.setattr(torch, "save", _disk_full_after_some_bytes)
    else:
        def no_space(*args):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        monkeypatch.setattr(os, "replace", no_space)
    with caplog.at_level(logging.WARNING, logger="core.checkpoint"):
        io.save_checkpoint({"step": 2}, path)  # no exception: training goes on
        io.remove_checkpoint(older)  # ModelCheckpoint dropping the file the failed one was to replace
    monkeypatch.undo()
    assert load_checkpoint(path)["step"] == 1 and older.is_file()
    assert sorted(os.listdir(path.parent)) == ["last.ckpt", "step0000001.ckpt"]  # no temp file left
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and "No space left on device" in lines[0] and str(path) in lines[0]
    assert io.last_write_failed and io.failed_writes == 1
    io.save_checkpoint({"step": 3}, path)  # space again: writes and removals resume
    io.remove_checkpoint(older)
    assert load_checkpoint(path)["step"] == 3 and not older.exists() and not io.last_write_failed


def test_disk_full_stops_the_run_when_configured(tmp_path, monkeypatch):
    path = tmp_path / "last.ckpt"
    io = AtomicCheckpointIO()  # default: stop
    io.save_checkpoint({"step": 1}, path)
    monkeypatch.setattr(torch, "save", _disk_full_after_some_bytes)
    with pytest.raises(CheckpointError, match=r"could not write checkpoint .*last.ckpt: No space left on device"):
        io.save_checkpoint({"step": 2}, path)
    monkeypatch.undo()
    assert load_checkpoint(path)["step"] == 1 and os.listdir(tmp_path) == ["last.ckpt"]
    with pytest.raises(CheckpointError, match="continue, stop"):
        AtomicCheckpointIO(on_write_error="ignore")


# -- ckpt_path: last, a run folder, a file; corrupted files are skipped --------------------------------------------
def _trainer_ckpt(path, step: int, mtime: float) -> None:
    atomic_torch_save({"state_dict": {"w": torch.full((4,), float(step))}, "optimizer_states": [{}],
                       "loops": {}, "global_step": step}, path)
    os.utime(path, (mtime, mtime))


def _run(root, date: str, steps: dict[str, int], t0: float):
    """runs/<name>/<date>/checkpoints/ with the given files (name -> step); later steps are newer files."""
    ckpts = root / "tiny" / date / "checkpoints"
    ckpts.mkdir(parents=True)
    for name, step in steps.items():
        _trainer_ckpt(ckpts / name, step, t0 + step)
    return ckpts.parent


def _truncate(path) -> None:
    data = path.read_bytes()
    mtime = path.stat().st_mtime
    path.write_bytes(data[: len(data) // 2])
    os.utime(path, (mtime, mtime))


def test_resolve_plain_values(tmp_path):
    assert resolve_ckpt_path(None, tmp_path, "tiny") is None
    assert resolve_ckpt_path("", tmp_path, "tiny") is None
    run = _run(tmp_path, "2026-01-01_00-00-00", {"last.ckpt": 4, "step0000004.ckpt": 4}, 1e9)
    last = str(run / "checkpoints" / "last.ckpt")
    assert resolve_ckpt_path(run, tmp_path, "tiny") == last  # a run folder
    assert resolve_ckpt_path(run / "checkpoints", tmp_path, "tiny") == last
    assert resolve_ckpt_path(last, tmp_path, "tiny") == last
    with pytest.raises(CheckpointError, match="no such file or folder"):
        resolve_ckpt_path(tmp_path / "nope.ckpt", tmp_path, "tiny")
    with pytest.raises(CheckpointError, match="no checkpoints in"):
        resolve_ckpt_path(tmp_path / "tiny", tmp_path, "tiny")


def test_resolve_last_is_the_newest_run(tmp_path):
    with pytest.raises(CheckpointError, match="ckpt_path=last: no checkpoint of an earlier run named 'tiny'"):
        resolve_ckpt_path("last", tmp_path, "tiny")
    _run(tmp_path, "2026-01-01_00-00-00", {"last.ckpt": 4}, 1e9)
    newest = _run(tmp_path, "2026-01-02_00-00-00", {"last.ckpt": 8}, 1e9)
    _run(tmp_path, "2026-01-03_00-00-00", {}, 1e9)  # a later run that wrote nothing yet (e.g. this one)
    (tmp_path / "other" / "x" / "checkpoints").mkdir(parents=True)
    _trainer_ckpt(tmp_path / "other" / "x" / "checkpoints" / "last.ckpt", 99, 2e9)  # another name: not ours
    assert resolve_ckpt_path("last", tmp_path, "tiny") == str(newest / "checkpoints" / "last.ckpt")


def test_resolve_last_takes_this_runs_folder_first(tmp_path, caplog):
    """A fixed hydra.run.dir (a requeued cluster job's own folder) resumes from itself, even when another run of
    that name is newer; an empty or unusable own folder falls back to the newest run of the name."""
    own = _run(tmp_path, "job42", {"step0000002.ckpt": 2, "last.ckpt": 3}, 1e9)
    newer = _run(tmp_path, "2026-01-02_00-00-00", {"last.ckpt": 8}, 2e9)
    with caplog.at_level(logging.INFO, logger="core.checkpoint"):
        assert resolve_ckpt_path("last", tmp_path, "tiny", run_dir=own) == str(own / "checkpoints" / "last.ckpt")
    assert f"in this run's folder {own}" in caplog.text  # the log says which one it took
    _truncate(own / "checkpoints" / "last.ckpt")
    assert resolve_ckpt_path("last", tmp_path, "tiny", run_dir=own) == str(own / "checkpoints" / "step0000002.ckpt")
    fresh = tmp_path / "elsewhere" / "job43"  # a fixed folder outside runs/<name>/ that wrote nothing yet
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="core.checkpoint"):
        assert resolve_ckpt_path("last", tmp_path, "tiny", run_dir=fresh) == str(newer / "checkpoints" / "last.ckpt")
    assert "the newest run named 'tiny'" in caplog.text
    with pytest.raises(CheckpointError, match=f"no checkpoint in this run's folder {fresh} nor of an earlier run"):
        resolve_ckpt_path("last", tmp_path, "other", run_dir=fresh)


def test_corrupted_last_falls_back_to_newest_intact(tmp_path, caplog):
    run = _run(tmp_path, "2026-01-01_00-00-00",
               {"step0000004.ckpt": 4, "step0000006.ckpt": 6, "best-step0000003-psnr30.000.ckpt": 3,
                "last.ckpt": 7}, 1e9)
    ckpts = run / "checkpoints"
    _truncate(ckpts / "last.ckpt")
    for value in ("last", run, ckpts / "last.ckpt"):
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="core.checkpoint"):
            assert resolve_ckpt_path(value, tmp_path, "tiny") == str(ckpts / "step0000006.ckpt")
        assert f"checkpoint {ckpts / 'last.ckpt'} cannot be resumed" in caplog.text  # the bad file is named
    (ckpts / "step0000006.ckpt").write_bytes(b"garbage")
    assert resolve_ckpt_path(run, tmp_path, "tiny") == str(ckpts / "step0000004.ckpt")
    # a file named on purpose is that file or an error, never another one
    with pytest.raises(CheckpointError, match="step0000006.ckpt: cannot resume from it"):
        resolve_ckpt_path(ckpts / "step0000006.ckpt", tmp_path, "tiny")


def test_last_falls_back_to_an_older_run_and_errors_when_nothing_is_intact(tmp_path):
    older = _run(tmp_path, "2026-01-01_00-00-00", {"step0000002.ckpt": 2, "last.ckpt": 3}, 1e9)
    newer = _run(tmp_path, "2026-01-02_00-00-00", {"last.ckpt": 5}, 1e9)  # resumed, killed before a validation
    _truncate(newer / "checkpoints" / "last.ckpt")
    assert resolve_ckpt_path("last", tmp_path, "tiny") == str(older / "checkpoints" / "last.ckpt")
    with pytest.raises(CheckpointError, match=r"no intact checkpoint in .*2026-01-02_00-00-00.*last.ckpt"):
        resolve_ckpt_path(newer, tmp_path, "tiny")
    for p in (older / "checkpoints").glob("*.ckpt"):
        _truncate(p)
    with pytest.raises(CheckpointError, match="no intact checkpoint of the runs named 'tiny'"):
        resolve_ckpt_path("last", tmp_path, "tiny")


def test_weights_only_file_is_not_resumable(tmp_path):
    path = tmp_path / "export.ckpt"
    atomic_torch_save({"state_dict": {}, "config": {}}, path)
    assert "weights only" in checkpoint_problem(path)
    with pytest.raises(CheckpointError, match="weights only"):
        resolve_ckpt_path(path, tmp_path, "tiny")
