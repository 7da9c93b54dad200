"""train.py -> evaluate.py -> restore.py on tiny data, exact resume, NaN stop, and clear CLI errors."""

from __future__ import annotations

import json

import lightning as L
import numpy as np
import pytest
import torch

from core.io import read_image, write_image
from tests.integration.conftest import run_cli, tiny_config


def test_training_writes_checkpoints_with_config(trained_run):
    ckpts = sorted((trained_run / "checkpoints").glob("*.ckpt"))
    names = [p.name for p in ckpts]
    assert "last.ckpt" in names and any(n.startswith("best-step0000002") for n in names)
    ckpt = torch.load(trained_run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert ckpt["global_step"] == 4
    assert ckpt["config"]["model"]["net"]["nf"] == 8
    assert any(k.startswith("ema_net.") for k in ckpt["state_dict"])
    assert (trained_run / "panels").is_dir() and list((trained_run / "panels").glob("*.png"))


def test_evaluate_checkpoint(trained_run, tmp_path):
    import evaluate

    out = tmp_path / "eval"
    summary = evaluate.main([f"ckpt={trained_run / 'checkpoints' / 'last.ckpt'}", f"out={out}", "steps=3",
                             "progress=false"])
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["n_images"] == 5 and saved["nfe"] == 3
    for key in ("psnr", "ssim", "psnr_input", "seconds_per_image"):
        assert np.isfinite(saved[key]) and saved[key] == pytest.approx(summary[key])
    assert len(list((out / "images").glob("*.png"))) == 5
    assert (out / "per_image.csv").read_text().count("\n") == 6
    panel_width = 3 * 32 + 2 * 4  # LQ | restored | GT with 4-px gaps, enlarged x3 (tiny images, to be seen)
    assert read_image(out / "preview.png").shape[1] == panel_width * (384 // panel_width)


def test_restore_folder_any_size_with_tiles(trained_run, tmp_path):
    import restore

    rng = np.random.default_rng(0)
    src = tmp_path / "in"
    write_image(src / "odd.png", rng.integers(0, 256, (37, 45, 3), dtype=np.uint8))
    write_image(src / "gray.png", rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)[:, :, 0])
    ckpt = trained_run / "checkpoints" / "last.ckpt"
    written = restore.main([f"ckpt={ckpt}", f"input={src}", f"output={tmp_path / 'out'}", "steps=2",
                            "progress=false"])
    assert sorted(p.name for p in written) == ["gray.png", "odd.png"]
    assert read_image(tmp_path / "out" / "odd.png").shape == (37, 45, 3)
    whole = read_image(tmp_path / "out" / "odd.png")
    restore.main([f"ckpt={ckpt}", f"input={src / 'odd.png'}", f"output={tmp_path / 'tiled'}", "steps=2",
                  "tile=16", "overlap=8", "progress=false"])
    assert read_image(tmp_path / "tiled" / "odd.png").shape == whole.shape
    # a tile as large as the image is one network call per step: the same seed gives the same pixels
    restore.main([f"ckpt={ckpt}", f"input={src / 'odd.png'}", f"output={tmp_path / 'one_tile'}", "steps=2",
                  "tile=64", "progress=false"])
    np.testing.assert_array_equal(read_image(tmp_path / "one_tile" / "odd.png"), whole)


def test_resume_is_exact(trained_run, tmp_path):
    """Resuming from the step-2 checkpoint reaches the same weights, optimizer and EMA as the uninterrupted run."""
    from train import train

    step2 = next((trained_run / "checkpoints").glob("best-step0000002*.ckpt"))
    out = tmp_path / "resumed"
    train(tiny_config(out, f"ckpt_path={step2}"))
    a = torch.load(trained_run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    b = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert b["global_step"] == a["global_step"] == 4
    for key, value in a["state_dict"].items():
        torch.testing.assert_close(b["state_dict"][key], value, rtol=0, atol=0, msg=key)
    state_a = a["optimizer_states"][0]["state"]
    state_b = b["optimizer_states"][0]["state"]
    for idx in state_a:
        torch.testing.assert_close(state_b[idx]["exp_avg"], state_a[idx]["exp_avg"], rtol=0, atol=0)
    assert a["lr_schedulers"][0]["last_epoch"] == b["lr_schedulers"][0]["last_epoch"]


def test_nonfinite_loss_stops_and_keeps_last_good_checkpoint(tmp_path, monkeypatch):
    from core.training import NonFiniteLossError
    from irsde import losses
    from train import train

    real = losses.LOSSES["matching"]
    calls = {"n": 0}

    def poisoned(*args, **kwargs):
        calls["n"] += 1
        loss = real(*args, **kwargs)
        return loss * float("nan") if calls["n"] == 3 else loss

    monkeypatch.setitem(losses.LOSSES, "matching", poisoned)
    with pytest.raises(NonFiniteLossError, match="step 2"):
        train(tiny_config(tmp_path, "trainer.max_steps=10"))
    last = torch.load(tmp_path / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert last["global_step"] == 2
    assert all(torch.isfinite(v).all() for v in last["state_dict"].values() if v.is_floating_point())


def test_cli_errors_are_one_clear_line(tmp_path):
    result = run_cli("evaluate.py", f"ckpt={tmp_path / 'missing.ckpt'}")
    assert result.returncode == 2
    assert "checkpoint not found" in result.stderr and "Traceback" not in result.stderr
    result = run_cli("restore.py", "ckpt=x.ckpt", "input=nowhere", "output=o")
    assert result.returncode == 2 and "Traceback" not in result.stderr


def test_a_misspelt_option_is_an_error_not_ignored(trained_run, tmp_path):
    import evaluate
    import restore
    from core.errors import ConfigError

    ckpt = f"ckpt={trained_run / 'checkpoints' / 'last.ckpt'}"
    with pytest.raises(ConfigError, match="unknown option stpes"):
        evaluate.main([ckpt, "stpes=3"])
    with pytest.raises(ConfigError, match="unknown option tiles"):
        restore.main([ckpt, "input=x.png", f"output={tmp_path}", "tiles=64"])
    import train

    with pytest.raises(ConfigError, match=r"unknown option stage1_ckpt=\.\.\. \(did you mean model.stage1_ckpt\?\)"):
        train.main(["experiment=diffir_s2_demo", "stage1_ckpt=x.ckpt"])  # DiffIR's keys live under model.
    summary = evaluate.main([ckpt, "model.sampler.steps=2", "data.task=rain", "max_images=1", "progress=false",
                             "perceptual=false", f"out={tmp_path / 'ok'}"])  # config overrides still work
    assert summary["nfe"] == 2


def test_score_existing_folders(tmp_path):
    import evaluate
    from core.metrics import calculate_psnr, calculate_ssim

    rng = np.random.default_rng(1)
    gts = [rng.integers(0, 256, (24, 28, 3), dtype=np.uint8) for _ in range(2)]
    outs = [np.clip(g.astype(int) + rng.integers(-9, 10, g.shape), 0, 255).astype(np.uint8) for g in gts]
    for i, (g, o) in enumerate(zip(gts, outs)):
        write_image(tmp_path / "gt" / f"im{i}.png", g)
        write_image(tmp_path / "restored" / f"im{i}.png", o)
    evaluate.main([f"restored={tmp_path / 'restored'}", f"gt={tmp_path / 'gt'}", "convention=y", "crop_border=2",
                   f"out={tmp_path / 'scores'}", "perceptual=false"])
    saved = json.loads((tmp_path / "scores" / "metrics.json").read_text())
    expected = np.mean([calculate_psnr(o, g, 2, True) for o, g in zip(outs, gts)])
    assert saved["psnr"] == pytest.approx(expected, abs=1e-9)
    assert saved["ssim"] == pytest.approx(np.mean([calculate_ssim(o, g, 2, True) for o, g in zip(outs, gts)]))


def test_evaluate_official_release_weights(tmp_path):
    """A plain official-style state dict (module. prefixes, no config) evaluates through an experiment config."""
    import evaluate
    from irsde.nets.unet import ConditionalUNet

    torch.manual_seed(0)
    net = ConditionalUNet(nf=8, depth=2)
    weights = tmp_path / "lastest_EMA.pth"
    torch.save({f"module.{k}": v for k, v in net.state_dict().items()}, weights)
    out = tmp_path / "eval"
    summary = evaluate.main([f"weights={weights}", "experiment=irsde_demo", "data.image_size=32", "data.patch_size=32",
                             "steps=2", "max_images=2", f"out={out}", "progress=false"])
    assert summary["n_images"] == 2 and summary["nfe"] == 2
    assert "release weights" in summary["model"]


def test_test_after_fit_scores_the_test_split_as_evaluate_does(tmp_path):
    """train.py test_after_fit=true runs test_step (the one evaluation loop) and logs the same PSNR/SSIM as
    evaluate.py on the checkpoint with the same sampler options."""
    import evaluate
    from train import train

    out = tmp_path / "run"
    results = train(tiny_config(out, "test_after_fit=true", "trainer.max_steps=2"))
    summary = evaluate.main([f"ckpt={out / 'checkpoints' / 'last.ckpt'}", "steps=3", f"out={tmp_path / 'eval'}",
                             "progress=false", "perceptual=false", "save_images=false"])
    assert results["test"]["test/psnr"] == pytest.approx(summary["psnr"], abs=1e-4)
    assert results["test"]["test/ssim"] == pytest.approx(summary["ssim"], abs=1e-5)


def test_evaluate_with_the_few_step_mr_samplers(trained_run, tmp_path):
    """sampler=mr_ode|mr_sde order= grid= reach IR-SDE's restorer from the command line; one evaluation a step."""
    import evaluate
    from core.errors import ConfigError

    ckpt = f"ckpt={trained_run / 'checkpoints' / 'last.ckpt'}"
    common = ["max_images=1", "progress=false", "perceptual=false", "save_images=false"]
    for sampler, order in (("mr_ode", 3), ("mr_sde", 2)):
        summary = evaluate.main([ckpt, f"sampler={sampler}", "steps=3", f"order={order}", "grid=uniform",
                                 f"out={tmp_path / sampler}", *common])
        assert summary["nfe"] == 3 and summary["sampler"]["order"] == order and np.isfinite(summary["psnr"])
    with pytest.raises(ConfigError, match="order= and grid="):
        evaluate.main([ckpt, "sampler=ode", "order=2", f"out={tmp_path / 'bad'}", *common])


class RaiseOutOfMemory(L.Callback):
    """A stand-in for a CUDA out-of-memory error in the second training step."""

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == 1:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")


def test_out_of_memory_names_the_batch_and_the_settings_that_lower_it(tmp_path):
    from core.training import OutOfMemory
    from train import train

    with pytest.raises(OutOfMemory, match=r"at step 1 with data.batch_size=4 per device, data.patch_size=32.*"
                                          r"trainer.precision=bf16-mixed.*CUDA out of memory"):
        train(tiny_config(tmp_path, "+callbacks.oom._target_=tests.integration.test_irsde_pipeline.RaiseOutOfMemory"))


def test_score_folder_without_ground_truth(tmp_path, monkeypatch):
    """restored=DIR alone: NIQE per image (Y channel, crop_border) with the no-reference code, nothing else."""
    import evaluate
    from core import noreference

    rng = np.random.default_rng(0)
    a = rng.normal(size=(36, 36))
    model = rng.normal(1.0, 0.5, 36), a @ a.T / 36 + 0.1 * np.eye(36)  # a stand-in for the pristine model
    monkeypatch.setattr(noreference, "load_niqe_params", lambda path=None: model)
    images = [np.clip(rng.normal(128, 40, (110, 200, 3)), 0, 255).astype(np.uint8) for _ in range(2)]
    for i, img in enumerate(images):
        write_image(tmp_path / "restored" / f"im{i}.png", img)
    evaluate.main([f"restored={tmp_path / 'restored'}", "crop_border=2", f"out={tmp_path / 'scores'}"])
    saved = json.loads((tmp_path / "scores" / "metrics.json").read_text())
    expected = np.mean([noreference.calculate_niqe(img, 2, model) for img in images])
    assert saved["n_images"] == 2 and saved["niqe"] == pytest.approx(expected, rel=1e-12)
    assert "psnr" not in saved and saved["convention"] == "y"
