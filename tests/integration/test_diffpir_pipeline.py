"""DiffPIR end to end on tiny data: train.py trains a tiny DDPM prior on the demo faces, then evaluate.py and
restore.py run DiffPIR with it; the trained prior must inpaint better than the masked input and than an
untrained prior of the same shape."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402

from core.cli import CONFIG_DIR  # noqa: E402
from core.errors import CheckpointError, DataError  # noqa: E402
from core.io import read_image, write_image  # noqa: E402
from tests.integration.conftest import run_tree  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
TINY_PRIOR = [
    "experiment=diffpir_prior_demo", "model.net.image_size=16", "model.net.channel_mult=[1,2]",
    "model.net.attention_resolutions=[2]", "model.val_task.nfe=4", "model.val_panels=1",
    "model.ema.decay=0.99", "model.optimizer.lr=2e-3",
    "data.image_size=16", "data.patch_size=16", "data.train_samples=256", "data.batch_size=32",
    "+data.val_max_images=2", "trainer.max_steps=160", "trainer.val_check_interval=160", "trainer.precision=32",
    "trainer.log_every_n_steps=20", "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false",
    "trainer.num_sanity_val_steps=0", "trainer.accelerator=cpu", "logger=csv",
]
EVAL = ["model=diffpir", "task=inpainting", "mask=box", "nfe=10", "progress=false", "perceptual=false",
        "save_images=false"]


@pytest.fixture(scope="module")
def prior_ckpt(tmp_path_factory) -> Path:
    from train import train

    out = tmp_path_factory.mktemp("prior")
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", overrides=[*TINY_PRIOR, f"paths.output_dir={out}"])
    train(cfg)
    return out / "checkpoints" / "last.ckpt"


def test_trained_prior_inpaints_better_than_the_masked_input_and_an_untrained_prior(prior_ckpt, tmp_path):
    import evaluate
    from diffpir.official import load_prior

    trained = evaluate.main([*EVAL, f"prior_ckpt={prior_ckpt}", f"out={tmp_path / 'trained'}"])
    assert trained["n_images"] == 10 and trained["nfe"] == 10
    assert trained["psnr"] > trained["psnr_input"] + 3.0

    torch.manual_seed(0)  # same architecture, fresh weights, saved as a plain state dict (a release-style file)
    untrained = type(load_prior(prior_ckpt))(**load_prior(prior_ckpt).config)
    torch.save(untrained.state_dict(), tmp_path / "untrained.pt")
    baseline = evaluate.main([*EVAL, f"prior_ckpt={tmp_path / 'untrained.pt'}", "data=demo_faces",
                              "data.image_size=16", "data.patch_size=16", f"out={tmp_path / 'untrained'}"])
    assert baseline["psnr_input"] == pytest.approx(trained["psnr_input"])  # the same measurements
    assert trained["psnr"] > baseline["psnr"] + 1.0


def test_the_prior_checkpoint_evaluates_its_validation_task(prior_ckpt, tmp_path):
    import evaluate

    summary = evaluate.main([f"ckpt={prior_ckpt}", "max_images=2", "progress=false", "perceptual=false",
                             f"out={tmp_path}"])
    assert summary["n_images"] == 2 and summary["sampler"]["task"] == "inpainting"


def test_restore_inpaints_a_users_image_with_its_mask_file(prior_ckpt, tmp_path):
    import restore

    rng = np.random.default_rng(0)
    image = rng.integers(50, 200, (16, 16, 3), dtype=np.uint8)
    mask = np.ones((16, 16), np.uint8)
    mask[4:10, 4:10] = 0
    image[mask == 0] = 0
    write_image(tmp_path / "in" / "photo.png", image)
    write_image(tmp_path / "masks" / "photo.png", np.repeat(mask[:, :, None] * 255, 3, axis=2))
    args = [f"prior_ckpt={prior_ckpt}", "model=diffpir", "task=inpainting", f"input={tmp_path / 'in'}",
            f"mask={tmp_path / 'masks'}", f"output={tmp_path / 'out'}", "nfe=5", "progress=false"]
    (written,) = restore.main(args)
    out = read_image(written).astype(np.float32) / 255
    known = mask > 0
    assert out.shape == (16, 16, 3)
    assert np.abs(out[known] - image[known] / 255).max() < 0.06  # the known pixels stay
    first = read_image(written)
    assert restore.main(args) == []  # a rerun skips the complete output
    assert restore.main([*args, "overwrite=true"])[0] == written
    assert np.array_equal(read_image(written), first)  # seeded by name

    write_image(tmp_path / "masks" / "photo.png", np.full((8, 8, 3), 255, np.uint8))
    with pytest.raises(DataError, match="mask must have the image's size"):
        restore.main([*args, "overwrite=true"])


def test_restore_super_resolves_and_rejects_a_kernel_that_does_not_sum_to_one(prior_ckpt, tmp_path):
    import restore

    write_image(tmp_path / "lr.png", np.full((8, 8, 3), 128, np.uint8))
    common = [f"prior_ckpt={prior_ckpt}", "model=diffpir", f"input={tmp_path / 'lr.png'}",
              f"output={tmp_path / 'out'}", "nfe=3", "progress=false"]
    (written,) = restore.main([*common, "task=sr_x2"])
    assert read_image(written).shape == (16, 16, 3)
    np.save(tmp_path / "k.npy", np.full((3, 3), 0.2))
    with pytest.raises(DataError, match="sums to 1.8"):
        restore.main([*common, "task=deblur_gaussian", f"kernel={tmp_path / 'k.npy'}"])


def test_restore_with_the_prior_as_ckpt_runs_its_validation_task(prior_ckpt, tmp_path, capsys):
    """Like any checkpoint, a prior restores through its restorer: DiffPIR with its validation task (box
    inpainting), named in the printed model line; model=diffpir task=... chooses another."""
    import restore

    write_image(tmp_path / "in.png", np.full((32, 32, 3), 128, np.uint8))
    (written,) = restore.main([f"ckpt={prior_ckpt}", f"input={tmp_path / 'in.png'}", f"output={tmp_path / 'out'}",
                               "steps=2", "progress=false"])
    assert read_image(written).shape == (32, 32, 3)
    assert "DiffPIR inpainting" in capsys.readouterr().out


def test_a_prior_of_the_wrong_kind_is_refused():
    import evaluate

    with pytest.raises(CheckpointError, match="not a guided-diffusion UNet"):
        evaluate.main(["model=diffpir", "task=inpainting", f"prior_ckpt={REPO / 'assets/irsde_demo_denoise.ckpt'}"])


def test_prior_trains_under_two_process_ddp_with_the_single_process_validation(tmp_path):
    """2 CPU ranks (gloo): the run completes, and val/psnr (DiffPIR on 2 images, one per rank) equals what
    evaluate.py measures on the same 2 images in one process."""
    import csv

    import evaluate

    replaced = ("trainer.max_steps=", "trainer.val_check_interval=", "data.train_samples=", "trainer.accelerator=")
    run_tree("train.py", *[o for o in TINY_PRIOR if not o.startswith(replaced)], "trainer=ddp", "trainer.devices=2",
             "trainer.accelerator=cpu", "trainer.max_steps=2", "trainer.val_check_interval=2",
             "data.train_samples=128", f"paths.output_dir={tmp_path}", f"hydra.run.dir={tmp_path / 'hydra'}")
    ckpt = tmp_path / "checkpoints" / "last.ckpt"
    assert torch.load(ckpt, map_location="cpu", weights_only=False)["global_step"] == 2
    (metrics_file,) = tmp_path.glob("csv/**/metrics.csv")
    logged = [float(r["val/psnr"]) for r in csv.DictReader(metrics_file.open()) if r.get("val/psnr")]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the ranks' arithmetic
    try:
        single = evaluate.main([f"ckpt={ckpt}", "max_images=2", "progress=false", "perceptual=false",
                                "save_images=false", f"out={tmp_path / 'eval'}"])
    finally:
        torch.set_num_threads(threads)
    assert logged and logged[-1] == pytest.approx(single["psnr"], abs=1e-3)
