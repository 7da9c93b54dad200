"""A real training process stopped by SIGTERM writes last.ckpt, exits with 143 and resumes with ckpt_path=last;
SLURM's warning signal (SIGUSR1) does the same and requeues the job."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import pytest
import torch

from tests.integration.conftest import REPO, TINY, tiny_config

NO_VALIDATION = "trainer.val_check_interval=1000"  # no checkpoint but the preemption's before the signal
SLOW = "+callbacks.slow._target_=tests.integration.test_preemption.SlowSteps"


class SlowSteps(L.Callback):
    """Each training step starts `seconds` later (so a signal lands before the step, as it would in a real one)
    and appends the global step after it to <out_dir>/steps; with `signal_at`, the process sends itself `signal`
    at the end of that step, after the Preemption callback's check."""

    def __init__(self, out_dir: str, seconds: float = 0.0, signal_at: int | None = None, signal: str = "SIGUSR1"):
        self.out_dir, self.seconds, self.signal_at, self.signal = Path(out_dir), seconds, signal_at, signal

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        time.sleep(self.seconds)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        with open(self.out_dir / "steps", "a") as f:
            f.write(f"{trainer.global_step}\n")
        if trainer.global_step == self.signal_at:
            os.kill(os.getpid(), getattr(signal, self.signal))


def _ckpt(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=False)


def _steps(probe: Path) -> list[int]:
    return [int(line) for line in (probe / "steps").read_text().split()] if (probe / "steps").is_file() else []


def test_sigterm_mid_run_writes_last_ckpt_exits_143_and_resumes_with_last(tmp_path):
    runs, probe = tmp_path / "runs", tmp_path / "probe"
    common = [*TINY, "name=tiny", f"paths.log_dir={runs}"]
    env = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1", "WANDB_SILENT": "true", "PYTHONPATH": str(REPO)}
    log = open(tmp_path / "log.txt", "w+")  # a file, not a pipe nobody reads while waiting
    proc = subprocess.Popen(
        [sys.executable, str(REPO / "train.py"), *common, "hydra.run.dir=${paths.log_dir}/${name}/a",
         "trainer.max_steps=200", NO_VALIDATION, SLOW, f"+callbacks.slow.out_dir={probe}",
         "+callbacks.slow.seconds=0.3"],
        cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 120
        while not (_steps(probe) and _steps(probe)[-1] >= 3):
            assert proc.poll() is None and time.monotonic() < deadline, "training did not reach step 3"
            time.sleep(0.05)
        ckpts = runs / "tiny" / "a" / "checkpoints"
        assert not ckpts.exists()  # mid-run, nothing written yet
        sent_at = _steps(probe)[-1]
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()
    out = (tmp_path / "log.txt").read_text()
    assert proc.returncode == 128 + signal.SIGTERM, out[-3000:]  # 143: a scheduler sees a stopped run
    assert sorted(p.name for p in ckpts.iterdir()) == ["last.ckpt"]
    step = _ckpt(ckpts / "last.ckpt")["global_step"]
    assert step in (sent_at, sent_at + 1)  # the batch boundary after the signal
    assert f"SIGTERM at step {step}: wrote {ckpts / 'last.ckpt'}" in out
    assert f"ckpt_path={runs / 'tiny' / 'a'}" in out and "Traceback" not in out

    # ckpt_path=last: the newest last.ckpt of the runs named `tiny`, from its step on (train.py's train() in this
    # process: the same code as the command line without another 5-10 s of imports)
    from train import train

    resumed = runs / "tiny" / "b"
    train(tiny_config(resumed, "name=tiny", f"paths.log_dir={runs}", "ckpt_path=last", f"trainer.max_steps={step + 2}",
                      "trainer.val_check_interval=1", SLOW, f"+callbacks.slow.out_dir={resumed / 'probe'}"))
    assert _steps(resumed / "probe") == [step + 1, step + 2]
    assert _ckpt(resumed / "checkpoints" / "last.ckpt")["global_step"] == step + 2


def test_sigterm_seen_first_by_lightning_still_checkpoints(tmp_path):
    """SIGTERM after the callback's check of a batch: Lightning's own SIGTERMException stops the loop at that
    batch's end (training_epoch_loop.on_advance_end); the callback's on_exception writes last.ckpt and sets 143."""
    from train import train

    out = tmp_path / "run"
    cfg = tiny_config(out, "trainer.max_steps=50", NO_VALIDATION, SLOW, f"+callbacks.slow.out_dir={tmp_path / 'p'}",
                      "+callbacks.slow.signal_at=2", "+callbacks.slow.signal=SIGTERM")
    with pytest.raises(SystemExit) as stop:
        train(cfg)
    assert stop.value.code == 128 + signal.SIGTERM
    assert _ckpt(out / "checkpoints" / "last.ckpt")["global_step"] == 2


def test_slurm_warning_signal_checkpoints_and_requeues(tmp_path, monkeypatch):
    """Under srun (Lightning's SLURMEnvironment, auto_requeue), SIGUSR1 at step 2: last.ckpt at the batch end,
    `scontrol requeue <job>`, exit status 138, and no mid-step hpc_ckpt from Lightning's own handler."""
    from train import train

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "scontrol").write_text(f'#!/bin/sh\necho "$@" > {tmp_path / "scontrol_args"}\n')
    (bin_dir / "scontrol").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    for key, value in {"SLURM_NTASKS": "1", "SLURM_JOB_ID": "4242", "SLURM_JOB_NAME": "train", "SLURM_PROCID": "0",
                       "SLURM_LOCALID": "0", "SLURM_NODEID": "0"}.items():
        monkeypatch.setenv(key, value)
    before = signal.getsignal(signal.SIGUSR1)
    out = tmp_path / "run"
    cfg = tiny_config(out, "trainer.max_steps=50", NO_VALIDATION, SLOW, f"+callbacks.slow.out_dir={tmp_path / 'probe'}",
                      "+callbacks.slow.signal_at=2")
    with pytest.raises(SystemExit) as stop:
        train(cfg)
    assert stop.value.code == 128 + signal.SIGUSR1
    assert (tmp_path / "scontrol_args").read_text().split() == ["requeue", "4242"]
    assert _ckpt(out / "checkpoints" / "last.ckpt")["global_step"] in (2, 3)
    assert not list(out.glob("hpc_ckpt_*.ckpt"))
    # handlers given back: Lightning's teardown (after on_exception) may reinstate ours, inactive, which then
    # forwards a signal to the handler that was there before (SIG_DFL here)
    handler = signal.getsignal(signal.SIGUSR1)
    assert handler == before or not handler.__self__.active


def test_exit_codes_job_ids_and_signal_names(monkeypatch):
    from core.errors import ConfigError
    from core.preemption import exit_code_for, requeue_slurm_job, signal_from_name, slurm_job_id

    assert (exit_code_for(signal.SIGTERM), exit_code_for(signal.SIGUSR1), exit_code_for(signal.SIGTERM, 0)) == (
        143, 138, 0)
    assert signal_from_name("usr1") == signal_from_name("SIGUSR1") == signal.SIGUSR1
    with pytest.raises(ConfigError, match="callbacks.preemption.signals: unknown signal 'SIGFOO'"):
        signal_from_name("SIGFOO")
    for key in ("SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID"):
        monkeypatch.delenv(key, raising=False)
    assert slurm_job_id() is None and requeue_slurm_job() is False  # outside SLURM: a warning, no scontrol
    monkeypatch.setenv("SLURM_JOB_ID", "100")
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "7")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "3")
    assert slurm_job_id() == "7_3"
