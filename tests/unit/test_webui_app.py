"""app.py without serving: the model list (the user's model, skipped missing files, a file that is no model,
listed models loaded on first use), the options and fast default each model shows, the demo images, a taken port
said first, and the launch settings (local only, no analytics, one worker, quiet)."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

import app
from core.errors import CheckpointError, ConfigError
from webui.catalogue import load_catalogue

ASSETS = Path(__file__).resolve().parents[2] / "assets"
DENOISE = ASSETS / "irsde_demo_denoise.ckpt"
FACES = ASSETS / "diffpir_demo_faces_prior.ckpt"
CPU = torch.device("cpu")


def test_app_serves_the_users_checkpoint_first_locally_without_analytics(monkeypatch, tmp_path):
    import gradio as gr

    launched = {}
    monkeypatch.setattr(gr.Blocks, "launch", lambda self, **kw: launched.update(page=self, **kw))
    monkeypatch.setattr(gr.Blocks, "block_thread", lambda self: None)
    app.main([f"ckpt={DENOISE}", "demo_images=false", "port=7999", f"work_dir={tmp_path}",
              f"models=[{{label: faces, prior_ckpt: {FACES}}}]"])
    page = launched.pop("page")
    assert launched["server_name"] == "127.0.0.1" and launched["server_port"] == 7999 and launched["share"] is False
    assert page.analytics_enabled is False and os.environ["GRADIO_ANALYTICS_ENABLED"] == "False"
    assert page._queue.default_concurrency_limit == 1  # users queue for the one worker
    assert launched["quiet"] is True  # no "To create a public link, set share=True"
    dropdown = next(b for b in page.blocks.values() if getattr(b, "elem_id", None) == "model")
    assert [c[0] for c in dropdown.choices] == ["irsde_demo_denoise.ckpt (yours)", "faces"]


def test_a_file_that_is_not_a_restoration_model_stops_the_app_with_one_line(tmp_path):
    garbage, foreign = tmp_path / "notes.ckpt", tmp_path / "foreign.ckpt"
    garbage.write_text("not a checkpoint")
    torch.save({"weights": torch.zeros(2)}, foreign)
    for path in (garbage, foreign):
        with pytest.raises(CheckpointError) as err:
            app.main([f"ckpt={path}", "demo_images=false", f"work_dir={tmp_path}"])
        assert str(path) in str(err.value)
    listed = load_catalogue(OmegaConf.create({"models": [{"label": "x", "ckpt": str(foreign)}]}), CPU)
    with pytest.raises(CheckpointError, match="foreign.ckpt"):  # a listed one when first used
        listed["x"].module()


def test_a_taken_port_is_said_before_anything_loads(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        start = time.monotonic()
        with pytest.raises(ConfigError, match=f"127.0.0.1:{port}: the port is taken"):  # not the bad ckpt=
            app.main([f"ckpt={tmp_path / 'missing.ckpt'}", f"port={port}", f"work_dir={tmp_path}"])
        assert time.monotonic() - start < 2


def test_a_listed_file_that_does_not_exist_is_skipped_with_a_log_line(caplog):
    caplog.set_level("INFO", logger="webui")
    models = load_catalogue(OmegaConf.create({"models": [{"label": "later", "ckpt": "assets/not_yet.ckpt"},
                                                         {"label": "denoise", "ckpt": str(DENOISE)}]}), CPU)
    assert list(models) == ["denoise"]
    assert "skipping later, assets/not_yet.ckpt does not exist" in caplog.text


def test_each_model_shows_the_options_its_restorer_takes_and_loads_when_first_used():
    cfg = OmegaConf.load(Path(app.__file__).parent / "configs" / "app.yaml")
    models = load_catalogue(OmegaConf.create({"models": cfg.models}), CPU)  # the shipped list, as shipped
    assert not any(m._modules for m in models.values())  # nothing loaded yet: the page answers at once
    irsde = models["IR-SDE denoising, σ 25 (demo)"]
    assert {"sampler", "steps", "sigma", "tile"} <= set(irsde.options) and not irsde.tasks
    assert {"mr_ode:1", "mr_ode:2", "mr_sde:2", "denoise_ode"} <= set(irsde.samplers)
    assert irsde.own == {"name": "denoise_ode", "steps": 22, "T": 100, "sigma": 25}
    # README "Which sampler when": the fast choice is the page's default, per kind of IR-SDE model
    assert irsde.fast == ("mr_ode:1", 2) and models["IR-SDE deraining (demo)"].fast == ("mr_sde:2", 5)
    assert models["DiffIR stage 2 (demo)"].fast is None  # no sampler choice: its own
    faces = models["DiffPIR, 32x32 grey faces prior (demo)"]
    assert faces.options == ("steps",) and faces.default_task == "inpainting" and faces.fast is None
    assert {"inpainting", "sr_x4", "deblur_gaussian"} <= set(faces.tasks)
    assert faces.module("sr_x4") is not faces.module("inpainting")


def test_demo_images_are_input_and_ground_truth_under_one_name(tmp_path):
    from core.io import image_size
    from webui.demo_images import write_demo_images

    demos = write_demo_images(tmp_path)
    kinds = {d.kind for d in demos}
    assert {"noise", "rain", "blur", "face", "face_x4", "real_x4"} <= kinds
    for demo in demos:
        assert demo.lq.name == demo.gt.name and demo.lq.is_file() and demo.gt.is_file()
    sr = next(d for d in demos if d.kind == "face_x4")
    assert image_size(sr.lq) == (8, 8) and image_size(sr.gt) == (32, 32) and sr.task == "sr_x4"
    real = next(d for d in demos if d.kind == "real_x4")  # a real JPEG encoder's output, for the RealSR demo
    assert image_size(real.lq) == (32, 32) and image_size(real.gt) == (128, 128)


def test_page_values_become_options():
    from core.errors import UserError
    from webui.catalogue import split_sampler
    from webui.page import DEFAULT, _radio, _task
    from webui.worker import whole

    assert [whole(v) for v in (None, "", 0, DEFAULT, 3.0, "16")] == [None, None, None, None, 3, 16]
    assert whole("0", zero_is_own=False) == 0 and whole(0, zero_is_own=False) == 0  # 0 px overlap is a choice
    for bad in ("lots", 2.5, -1):
        with pytest.raises(UserError, match="whole number"):
            whole(bad)
    assert split_sampler("mr_ode:1") == ("mr_ode", 1) and split_sampler("posterior") == ("posterior", None)
    assert _task("sr", 2) == "sr_x2" and _task("deblur_motion", 4) == "deblur_motion"
    assert _radio("sr_x4") == "sr" and _radio("inpainting") == "inpainting"
