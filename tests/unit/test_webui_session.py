"""The page's restoration without a browser: the same pixels as restore.py (IR-SDE and DiffPIR with a mask), the
numbers, Stop, and a run over several uploads with a bad one among them."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import restore
from core.io import read_image, write_image
from webui.run import MaskChoice, Settings, run_job, table
from webui.session import Options, Stopped, restore_image

pytestmark = pytest.mark.usefixtures("one_thread")

ASSETS = Path(__file__).resolve().parents[2] / "assets"
DENOISE = ASSETS / "irsde_demo_denoise.ckpt"
FACES = ASSETS / "diffpir_demo_faces_prior.ckpt"
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def denoiser():
    from core.loading import module_from_checkpoint
    from core.restorer import prepare_for_inference

    return prepare_for_inference(module_from_checkpoint(DENOISE)[0], CPU, "32")


def _noisy(folder: Path, name: str = "cat.png", size: int = 32, seed: int = 0) -> tuple[Path, np.ndarray]:
    rng = np.random.default_rng(seed)
    clean = np.kron(rng.integers(40, 220, (size // 8, size // 8, 3)), np.ones((8, 8, 1))).astype(np.uint8)
    noisy = np.clip(clean + rng.normal(0, 25, clean.shape), 0, 255).astype(np.uint8)
    path = folder / name
    write_image(path, noisy)
    return path, clean


def test_irsde_result_equals_restore_py_and_is_scored(tmp_path, denoiser):
    path, clean = _noisy(tmp_path)
    options = Options(sampler="mr_ode", steps=2, seed=7)
    result = restore_image(denoiser, read_image(path), path.name, options, device=CPU, gt=clean)
    written = restore.main([f"ckpt={DENOISE}", f"input={path}", f"output={tmp_path / 'cli'}", "sampler=mr_ode",
                            "steps=2", "seed=7", "progress=false"])[0]
    np.testing.assert_array_equal(result.image, read_image(written))
    assert result.nfe == 2 and result.seconds > 0 and "mr_ode" in result.description
    assert set(result.scores) == {"psnr", "ssim", "psnr_input", "ssim_input"}
    assert result.scores["psnr"] > result.scores["psnr_input"]  # the demo model does denoise


def test_seed_follows_the_file_name_as_restore_py(denoiser):
    image = np.full((16, 16, 3), 128, np.uint8)
    one, same, other = (restore_image(denoiser, image, name, Options(sampler="denoise_sde", steps=2), device=CPU)
                        for name in ("a.png", "a.png", "b.png"))
    assert np.array_equal(one.image, same.image) and not np.array_equal(one.image, other.image)


def test_diffpir_inpainting_with_a_mask_equals_restore_py(tmp_path):
    from omegaconf import OmegaConf

    from webui.catalogue import load_catalogue

    path, clean = _noisy(tmp_path, "face.png", size=32)
    mask = np.full((32, 32), 255, np.uint8)
    mask[8:20, 10:24] = 0
    Image.fromarray(mask).save(tmp_path / "mask.png")
    models = load_catalogue(OmegaConf.create({"models": [{"label": "faces", "prior_ckpt": str(FACES)}]}), CPU)
    module = models["faces"].module("inpainting")
    for choice, cli_mask in ((MaskChoice("file", file=str(tmp_path / "mask.png")), tmp_path / "mask.png"),
                             (MaskChoice("box"), "box")):
        out = run_job(module, [str(path)], Options(steps=3, seed=1, task="inpainting"),
                      Settings(CPU, tmp_path / "page"), mask=choice)[0]
        written = restore.main(["model=diffpir", f"prior_ckpt={FACES}", "task=inpainting", f"mask={cli_mask}",
                                f"input={path}", f"output={tmp_path / choice.source}", "steps=3", "seed=1",
                                "progress=false"])[0]
        np.testing.assert_array_equal(read_image(out.after), read_image(written), err_msg=f"mask {choice.source}")
        assert out.result.nfe == 3


def test_stop_ends_the_run_at_the_next_network_call(denoiser):
    stop = threading.Event()
    stop.set()
    with pytest.raises(Stopped):
        restore_image(denoiser, np.zeros((16, 16, 3), np.uint8), "x.png", Options(steps=3), device=CPU, stop=stop)
    # the hooks are gone afterwards: the same module restores normally
    restore_image(denoiser, np.zeros((16, 16, 3), np.uint8), "x.png", Options(steps=1), device=CPU)


def test_run_job_skips_a_bad_file_matches_ground_truth_and_writes_pngs(tmp_path, denoiser):
    good, clean = _noisy(tmp_path, "cat.png")
    bad = tmp_path / "notes.png"
    bad.write_text("not pixels")
    truth = tmp_path / "gt" / "cat.png"
    write_image(truth, clean)
    warnings: list[str] = []
    settings = Settings(CPU, tmp_path / "out")
    outputs = run_job(denoiser, [str(bad), str(good)], Options(steps=2), settings, gt_files=[str(truth)],
                      warn=warnings.append)
    assert len(warnings) == 1 and "notes.png is not an image" in warnings[0]
    assert [o.after.name for o in outputs] == ["cat.png"]
    np.testing.assert_array_equal(read_image(outputs[0].after), outputs[0].result.image)
    assert "psnr" in outputs[0].result.scores and "→" in table(outputs)
