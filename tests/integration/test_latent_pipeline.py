"""Latent Refusion end to end on tiny demo data: autoencoder training -> latent IR-SDE training with
model.autoencoder_ckpt= -> evaluate.main and restore.main (tile=) through the real entry points; exact extension
of both stages (3 steps then 7 == 7 straight, bit for bit); the frozen autoencoder stays out of the optimizer."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir

from core.cli import CONFIG_DIR
from core.io import read_image, write_image
from tests.integration.test_extend_run import _assert_same  # the same 7-step weights and optimizer check

AE_NET = ["ch=4", "ch_mult=[2,4]", "embed_dim=4"]  # two levels: latent at 1/2, padding multiple 4
COMMON = [
    "data.patch_size=32", "data.image_size=32", "data.train_samples=20", "data.batch_size=4",
    "trainer.precision=32", "trainer.log_every_n_steps=1", "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false", "trainer.num_sanity_val_steps=0", "trainer.accelerator=cpu",
    "logger=csv", "trainer.limit_val_batches=1", "trainer.val_check_interval=2", "model.val_panels=1",
]
AE = ["experiment=refusion_latent_ae_demo", *(f"model.net.{a}" for a in AE_NET), *COMMON]
LATENT = [
    "experiment=refusion_latent_demo", *(f"model.autoencoder.{a}" for a in AE_NET), "model.net.img_channel=4",
    "model.net.width=8", "model.net.enc_blk_nums=[1,1]", "model.net.dec_blk_nums=[1,1]", "model.sde.T=10",
    "model.val_options.steps=3", "model.ema.warmup=false", *COMMON,
]


def _config(out: Path, base: list[str], *overrides: str):
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose("train", overrides=[*base, f"paths.output_dir={out}", *overrides])


def _train(out: Path, base: list[str], *overrides: str) -> Path:
    from train import train

    train(_config(out, base, *overrides))
    return out / "checkpoints" / "last.ckpt"


def _ckpt(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=False)


@pytest.fixture(scope="module")
def autoencoder(tmp_path_factory) -> Path:
    return _train(tmp_path_factory.mktemp("ae"), AE, "trainer.max_steps=4")


@pytest.fixture(scope="module")
def latent(tmp_path_factory, autoencoder) -> Path:
    return _train(tmp_path_factory.mktemp("latent"), LATENT, "trainer.max_steps=4",
                  f"model.autoencoder_ckpt={autoencoder}")


def test_latent_checkpoint_holds_the_frozen_autoencoder_once(autoencoder, latent):
    ae, lat = _ckpt(autoencoder)["state_dict"], _ckpt(latent)["state_dict"]
    stored = {k[len("autoencoder."):]: v for k, v in lat.items() if k.startswith("autoencoder.")}
    assert stored.keys() == {k[len("net."):] for k in ae if k.startswith("net.")}
    for key, value in stored.items():  # frozen: bit-identical to the stage-1 weights after 4 steps
        assert torch.equal(value, ae["net." + key]), key
    assert not any(k.startswith(("ema_net.autoencoder", "net.autoencoder", "ema_autoencoder")) for k in lat)
    # the optimizer holds exactly the latent network's parameters
    n_net = sum(1 for k in lat if k.startswith("net."))
    assert len(_ckpt(latent)["optimizer_states"][0]["state"]) == n_net
    assert lat["autoencoder_loaded"].item() is True


def test_evaluate_and_restore_through_the_entry_points(latent, autoencoder, tmp_path):
    import evaluate
    import restore

    # the autoencoder file is no longer needed: the checkpoint carries it
    moved = autoencoder.with_suffix(".moved")
    autoencoder.rename(moved)
    try:
        summary = evaluate.main([f"ckpt={latent}", f"out={tmp_path / 'eval'}", "steps=3", "progress=false",
                                 "max_images=2", "sampler=mr_ode"])
        saved = json.loads((tmp_path / "eval" / "metrics.json").read_text())
        assert saved["n_images"] == 2 and saved["nfe"] == 3 and np.isfinite(summary["psnr"])
        rng = np.random.default_rng(0)
        write_image(tmp_path / "in" / "odd.png", rng.integers(0, 256, (37, 45, 3), dtype=np.uint8))
        restore.main([f"ckpt={latent}", f"input={tmp_path / 'in'}", f"output={tmp_path / 'whole'}", "steps=2",
                      "progress=false"])
        restore.main([f"ckpt={latent}", f"input={tmp_path / 'in'}", f"output={tmp_path / 'tiled'}", "steps=2",
                      "tile=16", "overlap=4", "progress=false"])
        whole, tiled = read_image(tmp_path / "whole" / "odd.png"), read_image(tmp_path / "tiled" / "odd.png")
        assert whole.shape == tiled.shape == (37, 45, 3)
        # a tile as large as the image: one encode / decode, the same pixels as without tiles
        restore.main([f"ckpt={latent}", f"input={tmp_path / 'in'}", f"output={tmp_path / 'one'}", "steps=2",
                      "tile=64", "progress=false"])
        np.testing.assert_array_equal(read_image(tmp_path / "one" / "odd.png"), whole)
    finally:
        moved.rename(autoencoder)


@pytest.mark.parametrize("stage", ["autoencoder", "latent"])
def test_extending_either_stage_is_exact(stage, autoencoder, tmp_path):
    base = AE if stage == "autoencoder" else [*LATENT, f"model.autoencoder_ckpt={autoencoder}"]
    full = _train(tmp_path / "full", base, "trainer.max_steps=7")
    short = _train(tmp_path / "short", base, "trainer.max_steps=3")
    longer = _train(tmp_path / "longer", base, "trainer.max_steps=7", f"ckpt_path={short}")
    _assert_same(_ckpt(full), _ckpt(longer))


def test_latent_training_without_an_autoencoder_says_so(tmp_path):
    from core.errors import ConfigError

    with pytest.raises(ConfigError, match="autoencoder_ckpt"):
        _train(tmp_path, LATENT, "trainer.max_steps=1", f"model.autoencoder_ckpt={tmp_path / 'missing.ckpt'}")
