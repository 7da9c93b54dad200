"""A run stopped in the middle of an epoch and resumed with ckpt_path=last equals the uninterrupted run bit for bit
on the CPU: weights, EMA weights, optimizer state, the logged per-step training losses and every training batch
(the items, the progressive schedule's crops and sizes). The stop is a real SIGTERM to a `python train.py`
process; the other stops Lightning bookkeeps differently (after a complete validation, at an epoch's end) run in
this process with the signal sent from inside."""

from __future__ import annotations

import csv
import json
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

EPOCH = 5  # batches per epoch: 20 samples, batches of 4
STEPS = 8  # validation (and last.ckpt) at steps 4 and 8
COMMON = [
    "data.train_samples=20", f"trainer.max_steps={STEPS}", "trainer.val_check_interval=4",
    "trainer.limit_val_batches=1",
    # the progressive schedule: 16 px batches of 4 for iterations 1-4, then 32 px batches of 2
    "+callbacks.progressive._target_=diffir.module.ProgressivePatches", "+callbacks.progressive.iters=[4,100]",
    "+callbacks.progressive.patch_sizes=[16,32]", "+callbacks.progressive.batch_sizes=[4,2]",
    "+callbacks.record._target_=tests.integration.test_exact_resume.BatchRecorder",
]
SLOW = "+callbacks.slow._target_=tests.integration.test_preemption.SlowSteps"


class BatchRecorder(L.Callback):
    """Appends one JSON line per training step to `path` (`path`.rank<r> on the other DDP ranks): the step, the
    epoch, the batch index in the epoch, the items, the batch's shape, its pixel sum and the loss."""

    def __init__(self, path: str) -> None:
        self.path = path

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        record = [trainer.global_step, trainer.current_epoch, batch_idx, batch["index"].tolist(),
                  list(batch["gt"].shape), float(batch["gt"].double().sum()), float(outputs["loss"])]
        rank = trainer.global_rank
        with open(self.path if rank == 0 else f"{self.path}.rank{rank}", "a") as f:
            f.write(json.dumps(record) + "\n")


def _records(path: Path) -> list[list]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _ckpt(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=False)


def _losses(run_dir: Path) -> list[tuple[int, str]]:
    """(logger step, train/loss as written) of every row of the run's CSV log that has a training loss."""
    rows = []
    for path in run_dir.rglob("metrics.csv"):
        rows += [(int(r["step"]), r["train/loss"]) for r in csv.DictReader(open(path)) if r.get("train/loss")]
    return rows


def _steps(probe: Path) -> list[int]:
    return [int(line) for line in (probe / "steps").read_text().split()] if (probe / "steps").is_file() else []


def assert_same_state(a: dict, b: dict) -> None:
    assert a["global_step"] == b["global_step"] == STEPS
    assert any(key.startswith("ema_net.") for key in a["state_dict"])
    for key, value in a["state_dict"].items():
        assert torch.equal(b["state_dict"][key], value), key
    for idx, state in a["optimizer_states"][0]["state"].items():
        for name, value in state.items():
            assert torch.equal(b["optimizer_states"][0]["state"][idx][name], value), (idx, name)


@pytest.fixture(scope="module")
def full(tmp_path_factory) -> Path:
    """The uninterrupted run."""
    from train import train

    out = tmp_path_factory.mktemp("full")
    train(tiny_config(out, *COMMON, f"+callbacks.record.path={out / 'batches.jsonl'}"))
    return out


@pytest.fixture(scope="module")
def sigterm(tmp_path_factory, full) -> dict:
    """`python train.py` stopped by SIGTERM in the middle of its first epoch, then resumed with ckpt_path=last."""
    from train import train

    tmp = tmp_path_factory.mktemp("sigterm")
    runs, probe = tmp / "runs", tmp / "probe"
    common = ["name=tiny", f"paths.log_dir={runs}", *COMMON]
    # the same threading as this process's runs (no OMP_NUM_THREADS of its own): bit-exact needs the same number
    # of threads in every run, since float sums (in the network and in the synthetic degradations) split by thread
    env = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1", "WANDB_SILENT": "true", "PYTHONPATH": str(REPO)}
    log = open(tmp / "log.txt", "w+")
    proc = subprocess.Popen(
        [sys.executable, str(REPO / "train.py"), *TINY, *common, "hydra.run.dir=${paths.log_dir}/${name}/a",
         f"+callbacks.record.path={tmp / 'a.jsonl'}", SLOW, f"+callbacks.slow.out_dir={probe}",
         "+callbacks.slow.seconds=0.5"],
        cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 180
        while not (_steps(probe) and _steps(probe)[-1] >= 2):
            assert proc.poll() is None and time.monotonic() < deadline, "training did not reach step 2"
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()
    out = (tmp / "log.txt").read_text()
    assert proc.returncode == 128 + signal.SIGTERM, out[-3000:]
    stopped = runs / "tiny" / "a"
    train(tiny_config(runs / "tiny" / "b", *common, "ckpt_path=last", f"+callbacks.record.path={tmp / 'b.jsonl'}"))
    return {"stopped": stopped, "resumed": runs / "tiny" / "b", "a": tmp / "a.jsonl", "b": tmp / "b.jsonl",
            "step": _ckpt(stopped / "checkpoints" / "last.ckpt")["global_step"]}


def test_sigterm_mid_epoch_then_ckpt_path_last_equals_the_uninterrupted_run(full, sigterm):
    assert 2 <= sigterm["step"] < EPOCH, "the stop must fall inside the first epoch"
    assert_same_state(_ckpt(full / "checkpoints" / "last.ckpt"),
                      _ckpt(sigterm["resumed"] / "checkpoints" / "last.ckpt"))
    # the loss curve: the stopped run's rows, then the resumed run's, are the uninterrupted run's rows
    expected = _losses(full)
    assert [step for step, _ in expected] == list(range(STEPS))
    assert _losses(sigterm["stopped"]) + _losses(sigterm["resumed"]) == expected


def test_progressive_schedule_and_batches_continue_across_the_resume(full, sigterm):
    whole = _records(full / "batches.jsonl")
    before, after = _records(sigterm["a"]), _records(sigterm["b"])
    assert [r[0] for r in before] == list(range(1, sigterm["step"] + 1))
    assert before + after == whole  # same items, crops, sizes, pixels and losses at every step
    assert [r[4] for r in whole] == [[4, 3, 16, 16]] * 4 + [[2, 3, 32, 32]] * 4  # the stage switch at iteration 5
    assert [r[1:3] for r in whole] == [[0, i] for i in range(EPOCH)] + [[1, i] for i in range(STEPS - EPOCH)]


@pytest.mark.parametrize("signal_at, signal_name, stop, workers", [
    (4, "SIGUSR1", 4, 2),  # sent after the callback's check of step 4, seen at the validation that follows;
    #                        with 2 DataLoader workers (the uninterrupted run has none)
    (5, "SIGTERM", 5, 0),  # Lightning's own stop, after the last batch of the epoch
])
def test_stops_after_a_validation_or_at_an_epoch_end_resume_exactly(full, tmp_path, signal_at, signal_name, stop,
                                                                     workers):
    from train import train

    stopped, resumed = tmp_path / "a", tmp_path / "b"
    common = [*COMMON, f"data.num_workers={workers}"]
    with pytest.raises(SystemExit) as exit_:
        train(tiny_config(stopped, *common, f"+callbacks.record.path={tmp_path / 'a.jsonl'}", SLOW,
                          f"+callbacks.slow.out_dir={tmp_path}", f"+callbacks.slow.signal_at={signal_at}",
                          f"+callbacks.slow.signal={signal_name}"))
    assert exit_.value.code == 128 + getattr(signal, signal_name)
    ckpt = stopped / "checkpoints" / "last.ckpt"
    assert _ckpt(ckpt)["global_step"] == stop
    train(tiny_config(resumed, *common, f"ckpt_path={ckpt}", f"+callbacks.record.path={tmp_path / 'b.jsonl'}"))
    assert_same_state(_ckpt(full / "checkpoints" / "last.ckpt"), _ckpt(resumed / "checkpoints" / "last.ckpt"))
    assert _losses(stopped) + _losses(resumed) == _losses(full)
    assert _records(tmp_path / "a.jsonl") + _records(tmp_path / "b.jsonl") == _records(full / "batches.jsonl")
