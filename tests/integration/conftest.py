"""Tiny end-to-end runs of the real entry points: a 2-level UNet of width 8 on 32x32 demo images."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from core.cli import CONFIG_DIR

REPO = Path(__file__).resolve().parents[2]

# The plain IR-SDE path (synthetic rain, posterior sampler); the demo experiment itself is the denoising variant.
TINY = [
    "experiment=irsde_demo", "data.task=rain", "model.sde.kind=irsde", "model.sde.max_sigma=10", "model.sde.eps=0.005",
    "model.sampler.name=posterior", "model.ema.warmup=false",
    "model.scheduler={_target_:torch.optim.lr_scheduler.StepLR,_partial_:true,step_size:1,gamma:0.9}",
    "model.net.nf=8", "model.net.depth=2", "model.sde.T=10", "model.val_options.steps=3",
    "model.val_panels=2", "data.patch_size=32", "data.image_size=32", "data.train_samples=8", "data.batch_size=4",
    "trainer.max_steps=4", "trainer.val_check_interval=2", "trainer.precision=32", "trainer.log_every_n_steps=1",
    "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false", "trainer.num_sanity_val_steps=0",
    "trainer.accelerator=cpu", "logger=csv",
]


def tiny_config(out_dir: Path, *overrides: str):
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose("train", overrides=[*TINY, f"paths.output_dir={out_dir}", *overrides])


def run_cli(script: str, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1", "WANDB_SILENT": "true", "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, str(REPO / script), *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=timeout)


TREE_TIMEOUT = 300  # seconds per process tree; a healthy DDP run of the tiny configs takes 7-40 s
# Variables that would make the children join some other process group instead of starting their own.
DIST_ENV = ("MASTER_ADDR", "MASTER_PORT", "LOCAL_RANK", "RANK", "WORLD_SIZE", "NODE_RANK", "LOCAL_WORLD_SIZE")


def run_tree(*args: str) -> str:
    """Run `python ARGS` in the repo with its DDP children in a process group of their own, killed as a whole
    on timeout (a rank left alone would otherwise wait in a collective for half an hour)."""
    env = {k: v for k, v in os.environ.items() if k not in DIST_ENV}
    # One thread per process in every run: the 1- and 2-process validations then do the same arithmetic.
    env.update(NO_ALBUMENTATIONS_UPDATE="1", WANDB_SILENT="true", PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, *args], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=TREE_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        pytest.fail(f"python {' '.join(args)} timed out after {TREE_TIMEOUT} s:\n{out[-4000:]}")
    assert proc.returncode == 0, f"python {' '.join(args)} failed:\n{out[-6000:]}"
    return out


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory):
    """One tiny training run shared by the tests that only read its outputs."""
    from train import train

    out = tmp_path_factory.mktemp("run")
    train(tiny_config(out, "callbacks.checkpoint.save_top_k=-1"))
    return out
