"""The default logger: wandb goes offline by itself without an API key and records what a user needs."""

from __future__ import annotations

import time

from tests.integration.conftest import tiny_config
from tests.integration.wandb_records import logged


def test_wandb_offline_run_has_logged_keys(tmp_path, monkeypatch):
    from train import train

    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc key either
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    train(tiny_config(tmp_path / "run", "logger=wandb", "trainer.max_steps=2"))
    import wandb

    wandb.finish()
    runs = list((tmp_path / "run" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1, "an offline run directory, to sync later with `wandb sync`"
    expected = {"train/loss", "val/psnr", "val/ssim", "lr-Adam", "val/panels/count", "trainer/global_step"}
    # wandb's service process writes the run file asynchronously: give it a moment after finish()
    for _ in range(40):
        history, config = logged(next(runs[0].glob("run-*.wandb")))
        if expected <= history:
            break
        time.sleep(0.5)
    for key in sorted(expected):
        assert key in history, f"{key} not logged; got {sorted(history)}"
    assert {"model", "data", "trainer"} <= config, sorted(config)
    assert list((runs[0] / "files" / "media" / "images").rglob("*.png")), "LQ | restored | GT panels"
