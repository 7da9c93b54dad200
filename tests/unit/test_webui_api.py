"""The page's API without serving: one public endpoint, /restore, whose only required input is the image(s); its
answer (restored PNGs + numbers) for an image alone; clear errors; and the expected time shown before a run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from core.io import read_image, write_image
from webui.catalogue import load_catalogue
from webui.estimate import Timing, expected_seconds, network_pixels
from webui.run import Settings
from webui.worker import Worker

pytestmark = pytest.mark.usefixtures("one_thread")

ASSETS = Path(__file__).resolve().parents[2] / "assets"
CPU = torch.device("cpu")
OPTIONAL = ["model", "sampler", "steps", "sigma", "tile", "overlap", "seed", "task", "mask", "mask_kind", "kernel",
            "ground_truth"]


@pytest.fixture(scope="module")
def models():
    return load_catalogue(OmegaConf.create({"models": [
        {"label": "denoise", "ckpt": str(ASSETS / "irsde_demo_denoise.ckpt")},
        {"label": "faces", "prior_ckpt": str(ASSETS / "diffpir_demo_faces_prior.ckpt"), "kernel_size": 15}]}), CPU)


@pytest.fixture(scope="module")
def page(models, tmp_path_factory):
    from webui.page import build_page

    return build_page(models, Settings(CPU, tmp_path_factory.mktemp("out")), [], seed=3)


def test_one_endpoint_whose_only_required_input_is_the_images(page):
    api = page.get_api_info()
    assert list(api["named_endpoints"]) == ["/restore"] and not api["unnamed_endpoints"]  # helpers hidden
    params = api["named_endpoints"]["/restore"]["parameters"]
    assert [p["parameter_name"] for p in params] == ["images", *OPTIONAL]
    assert [p["parameter_name"] for p in params if not p["parameter_has_default"]] == ["images"]
    assert [r["label"] for r in api["named_endpoints"]["/restore"]["returns"]] == ["restored", "numbers"]


def _endpoint(page):
    return next(fn.fn for fn in page.fns.values() if fn.api_name == "restore")


def test_an_image_alone_restores_with_the_fast_default(page, tmp_path):
    path = tmp_path / "noisy.png"
    write_image(path, np.random.default_rng(0).integers(0, 256, (20, 28, 3), dtype=np.uint8))
    files, numbers = _endpoint(page)([str(path)])
    assert len(files) == 1 and read_image(files[0]).shape == (20, 28, 3)
    assert numbers["model"] == "denoise" and "mr_ode" in numbers["restorer"]
    assert numbers["images"][0] | {"seconds": 0} == {"name": "noisy.png", "file": "noisy.png", "width": 28,
                                                      "height": 20, "nfe": 2, "seconds": 0}


def test_bad_values_are_one_line_errors(page, tmp_path):
    import gradio as gr

    path = tmp_path / "x.png"
    write_image(path, np.zeros((8, 8, 3), np.uint8))
    restore = _endpoint(page)
    for kwargs, message in (({"model": "nope"}, "no model 'nope' here"),
                            ({"sampler": "mr_ode:7"}, "sampler=mr_ode:7: denoise offers"),
                            ({"task": "sr_x4"}, "task= applies to DiffPIR priors"),
                            ({"steps": 1000}, "steps=1000")):
        with pytest.raises(gr.Error, match=message):
            restore([str(path)], **kwargs)


def test_expected_time_counts_nfes_pixels_and_tiles(models):
    timing = Timing(fixed=0.5, per_pixel=1e-6, scale=1)
    assert expected_seconds(timing, 10, [(100, 200)]) == pytest.approx(10 * (0.5 + 0.02))
    assert network_pixels(1000, 1000, tile=256, overlap=32) == 25 * 256 * 256  # 5 x 5 tiles
    assert network_pixels(8, 8, scale=4) == 32 * 32
    worker = Worker(models, Settings(CPU, Path("unused")))
    m = models["denoise"]
    line = worker.estimate(m, worker.options(m, "mr_ode:1", 2), [(64, 64)])
    assert line.startswith("Expected time: about ") and "2 NFEs each" in line
    assert worker.estimate(m, worker.options(m, steps=500), [(64, 64)]).startswith("⚠ steps=500")
