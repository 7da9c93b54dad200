"""evaluate.py's numbers on the shipped demo models are those of the suite before the restorer interface and the
one evaluation loop (pinned from `main` at ab0190c: python evaluate.py ckpt=assets/irsde_demo_denoise.ckpt and
python evaluate.py model=diffpir prior_ckpt=assets/diffpir_demo_faces_prior.ckpt task=inpainting mask=box)."""

from __future__ import annotations

from pathlib import Path

import pytest

ASSETS = Path(__file__).resolve().parents[2] / "assets"
# name: (psnr, ssim, psnr_input, ssim_input) as per_image.csv wrote them
IRSDE = {"chelsea": (27.796183, 0.777857, 20.273848, 0.421370)}
DIFFPIR = {"face090": (28.170798, 0.780848, 10.896955, 0.371929),
           "face091": (23.712191, 0.711782, 9.679005, 0.194189)}


def _check(out: Path, expected: dict) -> None:
    import csv

    rows = {r["name"]: r for r in csv.DictReader(open(out / "per_image.csv"))}
    assert set(rows) == set(expected)
    for name, values in expected.items():
        got = tuple(float(rows[name][k]) for k in ("psnr", "ssim", "psnr_input", "ssim_input"))
        assert got == pytest.approx(values, abs=2e-6), name


@pytest.mark.skipif(not (ASSETS / "irsde_demo_denoise.ckpt").is_file(), reason="demo checkpoint not shipped")
def test_irsde_demo_numbers_unchanged(tmp_path, one_thread):
    import evaluate

    evaluate.main([f"ckpt={ASSETS / 'irsde_demo_denoise.ckpt'}", f"out={tmp_path}", "max_images=1",
                   "progress=false", "perceptual=false"])
    _check(tmp_path, IRSDE)


@pytest.mark.skipif(not (ASSETS / "diffpir_demo_faces_prior.ckpt").is_file(), reason="demo prior not shipped")
def test_diffpir_demo_numbers_unchanged(tmp_path, one_thread):
    import evaluate

    evaluate.main(["model=diffpir", f"prior_ckpt={ASSETS / 'diffpir_demo_faces_prior.ckpt'}", "task=inpainting",
                   "mask=box", f"out={tmp_path}", "max_images=2", "progress=false", "perceptual=false"])
    _check(tmp_path, DIFFPIR)
