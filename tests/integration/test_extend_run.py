""""Train longer" and requeued jobs resume exactly (bit for bit on the CPU against the uninterrupted run):
* a run ended by trainer.max_steps inside an epoch, resumed from its last.ckpt with a larger max_steps, with
  validation off (the checkpoint of the epoch-end hooks) and with max_steps between two validations (the
  checkpoint written at the end of training, core.callbacks.FinalCheckpoint);
* a run ended by max_steps at the last batch of an epoch, and a checkpoint written at an epoch end inside a run
  (core.resume_state: Lightning alone resumes those as the middle of the next epoch);
* ckpt_path=last in a fixed run folder (hydra.run.dir, a cluster job's own folder) after a mid-epoch SIGTERM stop:
  it resumes from that folder, not from the newest run of the name."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
import torch

from tests.integration.conftest import TINY, tiny_config
from tests.integration.test_exact_resume import BatchRecorder, _records  # noqa: F401 (the recorder's target)

STEPS = 7  # 20 samples at batch 4: 5 steps per epoch, so the extension crosses an epoch end
COMMON = ["data.train_samples=20", "data.batch_size=4"]
NO_VAL = ["trainer.limit_val_batches=0", "trainer.val_check_interval=null"]
VAL = ["trainer.limit_val_batches=1", "trainer.val_check_interval=2"]  # validations at 2, 4, 6 (and 8)
RECORD = "+callbacks.record._target_=tests.integration.test_exact_resume.BatchRecorder"


def _ckpt(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=False)


def _assert_same(a: dict, b: dict) -> None:
    assert a["global_step"] == b["global_step"] == STEPS
    assert a["state_dict"].keys() == b["state_dict"].keys()
    for key, value in a["state_dict"].items():
        assert torch.equal(b["state_dict"][key], value), key
    for idx, state in a["optimizer_states"][0]["state"].items():
        for name, value in state.items():
            assert torch.equal(b["optimizer_states"][0]["state"][idx][name], value), (idx, name)


def _run(out: Path, *overrides: str) -> Path:
    from train import train

    train(tiny_config(out, *COMMON, RECORD, f"+callbacks.record.path={out}.jsonl", *overrides))
    return out / "checkpoints" / "last.ckpt"


@pytest.mark.parametrize("val", [NO_VAL, VAL], ids=["no-validation", "max_steps-between-validations"])
def test_extending_a_run_that_max_steps_ended_mid_epoch_is_exact(tmp_path, val):
    full = _run(tmp_path / "full", *val, f"trainer.max_steps={STEPS}")
    short = _run(tmp_path / "short", *val, "trainer.max_steps=3")
    assert _ckpt(short)["global_step"] == 3  # last.ckpt is the final step, not the validation before it
    longer = _run(tmp_path / "longer", *val, f"trainer.max_steps={STEPS}", f"ckpt_path={short}")
    _assert_same(_ckpt(full), _ckpt(longer))
    # the same batches, in the same epochs and positions: the extension continues epoch 0
    assert _records(tmp_path / "short.jsonl") + _records(tmp_path / "longer.jsonl") == _records(tmp_path / "full.jsonl")


def test_ckpt_path_last_resumes_from_a_fixed_run_folder(tmp_path):
    import train

    full = _run(tmp_path / "full", *NO_VAL, f"trainer.max_steps={STEPS}")
    job = tmp_path / "scratch" / "job42"  # outside runs/<name>/, where `last` used to look only
    runs = tmp_path / "runs"
    (runs / "tiny" / "other" / "checkpoints").mkdir(parents=True)  # a newer run of the same name must not win
    torch.save(_ckpt(full), runs / "tiny" / "other" / "checkpoints" / "last.ckpt")
    argv = [*TINY, *COMMON, *NO_VAL, "name=tiny", f"paths.log_dir={runs}", f"hydra.run.dir={job}",
            f"trainer.max_steps={STEPS}"]
    with pytest.raises(SystemExit) as stop:  # SIGTERM after step 2, inside the first epoch
        train.main([*argv, "+callbacks.slow._target_=tests.integration.test_preemption.SlowSteps",
                    f"+callbacks.slow.out_dir={tmp_path}", "+callbacks.slow.signal_at=2",
                    "+callbacks.slow.signal=SIGTERM"])
    assert stop.value.code == 128 + signal.SIGTERM
    assert _ckpt(job / "checkpoints" / "last.ckpt")["global_step"] == 2
    train.main([*argv, "ckpt_path=last"])
    _assert_same(_ckpt(full), _ckpt(job / "checkpoints" / "last.ckpt"))


def test_a_run_that_ends_at_an_epoch_end_extends_exactly(tmp_path):
    """12 samples at batch 4: max_steps=3 ends exactly at the end of epoch 0."""
    common = ["data.train_samples=12", *NO_VAL]
    every_epoch = ["+callbacks.epochs._target_=lightning.pytorch.callbacks.ModelCheckpoint",
                   f"+callbacks.epochs.dirpath={tmp_path / 'epochs'}", "+callbacks.epochs.save_top_k=-1",
                   "+callbacks.epochs.save_on_train_epoch_end=true"]  # epoch=N-step=M.ckpt at every epoch end
    full = _run(tmp_path / "full", *common, *every_epoch, f"trainer.max_steps={STEPS}")
    short = _run(tmp_path / "short", *common, "trainer.max_steps=3")
    longer = _run(tmp_path / "longer", *common, f"trainer.max_steps={STEPS}", f"ckpt_path={short}")
    _assert_same(_ckpt(full), _ckpt(longer))
    assert _records(tmp_path / "short.jsonl") + _records(tmp_path / "longer.jsonl") == _records(tmp_path / "full.jsonl")
    # the epoch-end checkpoint of the uninterrupted run itself (step 6, written by ModelCheckpoint) resumes too
    epoch_end = tmp_path / "epoch_end.ckpt"  # a name without "=" for the command line
    (tmp_path / "epochs" / "epoch=1-step=6.ckpt").rename(epoch_end)
    assert _ckpt(epoch_end)["global_step"] == 6
    again = _run(tmp_path / "again", *common, f"trainer.max_steps={STEPS}", f"ckpt_path={epoch_end}")
    _assert_same(_ckpt(full), _ckpt(again))
