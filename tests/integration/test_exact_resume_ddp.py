"""Exact mid-epoch resume on 2 DDP ranks (CPU, gloo): each rank resumes its own shard of the epoch at its next
batch, and the weights, EMA and every rank's batches equal those of the uninterrupted 2-rank run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

from tests.integration.conftest import DIST_ENV, REPO, TINY, TREE_TIMEOUT
from tests.integration.test_exact_resume import COMMON, SLOW, STEPS, _ckpt, _losses, _records, assert_same_state

DDP = [*TINY, *COMMON, "data.train_samples=40", "trainer=ddp", "trainer.devices=2"]  # 5 batches per rank and epoch


def train_ddp(run_dir, *overrides: str) -> tuple[int, str]:
    """`python train.py` on 2 ranks in a process group of its own: its exit status and output."""
    env = {k: v for k, v in os.environ.items() if k not in DIST_ENV}
    env.update(NO_ALBUMENTATIONS_UPDATE="1", WANDB_SILENT="true", PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "train.py", *DDP, f"hydra.run.dir={run_dir}", *overrides], cwd=REPO,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=TREE_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
    return proc.returncode, out[-4000:]


def test_two_ranks_resume_mid_epoch_exactly(tmp_path):
    full, stopped, resumed = tmp_path / "full", tmp_path / "a", tmp_path / "b"
    code, out = train_ddp(full, f"+callbacks.record.path={tmp_path / 'full.jsonl'}")
    assert code == 0, out
    # each rank sends itself SIGUSR1 after step 2; the ranks agree at step 3 and stop there, mid-epoch
    code, out = train_ddp(stopped, f"+callbacks.record.path={tmp_path / 'a.jsonl'}", SLOW,
                          f"+callbacks.slow.out_dir={tmp_path}", "+callbacks.slow.signal_at=2")
    assert code == 128 + signal.SIGUSR1, out
    ckpt = stopped / "checkpoints" / "last.ckpt"
    assert _ckpt(ckpt)["global_step"] == 3
    code, out = train_ddp(resumed, f"ckpt_path={ckpt}", f"+callbacks.record.path={tmp_path / 'b.jsonl'}")
    assert code == 0, out
    assert_same_state(_ckpt(full / "checkpoints" / "last.ckpt"), _ckpt(resumed / "checkpoints" / "last.ckpt"))
    assert _losses(stopped) + _losses(resumed) == _losses(full)
    shards = []
    for suffix in ("", ".rank1"):
        whole = _records(tmp_path / f"full.jsonl{suffix}")
        assert len(whole) == STEPS
        assert _records(tmp_path / f"a.jsonl{suffix}") + _records(tmp_path / f"b.jsonl{suffix}") == whole, suffix
        shards.append({i for record in whole[:5] for i in record[3]})
    assert not shards[0] & shards[1], "the ranks train on disjoint shards of the first epoch"
