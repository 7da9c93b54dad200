"""Smoke tests of the IR-SDE benchmark scripts in their --quick modes (tiny networks, tiny images)."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import numpy as np
import pytest
import torch
from PIL import Image

from benchmarks.common import markdown_table


def numpy_psnr(restored: torch.Tensor, gt: torch.Tensor) -> float:
    """PSNR of the 8-bit versions of two CHW images in [0, 1], written out here from the definition."""
    a = np.round(np.clip(restored.numpy().astype(np.float32), 0, 1) * 255).astype(np.float64)
    b = np.round(np.clip(gt.numpy().astype(np.float32), 0, 1) * 255).astype(np.float64)
    return float(10 * np.log10(255.0**2 / np.mean((a - b) ** 2)))


# ----------------------------------------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------------------------------------


def test_markdown_table_pads_columns():
    table = markdown_table(["a", "long header"], [["xyz", "1"]])
    assert table.splitlines() == ["| a   | long header |", "|-----|-------------|", "| xyz | 1           |"]


# ----------------------------------------------------------------------------------------------------------
# irsde_speed
# ----------------------------------------------------------------------------------------------------------


def test_speed_quick(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    from benchmarks import irsde_speed
    from irsde.nets.unet import ConditionalUNet

    out = tmp_path / "speed.json"
    # Memory probes of the fp32 cells only: each probe is a fresh Python process (~2-3 s of imports).
    irsde_speed.main(["--quick", "--full-samplers", "--steps", "4", "2", "--measure-max-steps", "2",
                      "--memory-precisions", "fp32", "--out", str(out)])
    assert "training images/s" in capsys.readouterr().out
    data = json.loads(out.read_text())

    machine = data["machine"]
    assert machine["torch_version"] == torch.__version__
    assert machine["device"] == "cpu" and machine["torch_threads"] >= 1
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        assert machine["cpu_model"] in cpuinfo.read_text()
    assert data["network"]["params"] == sum(p.numel() for p in ConditionalUNet(3, 3, 8, 2).parameters())
    settings = data["settings"]
    sizes = (settings["nf"], settings["depth"], settings["train_size"], settings["eval_size"])
    assert sizes == (8, 2, 64, 64)

    for name in ("fp32", "bf16"):
        cfg = data["configs"][name]
        steps_s = cfg["train"]["seconds_per_step"]
        assert len(steps_s) == 1 and steps_s[0] > 0
        assert cfg["train"]["images_per_s"] == pytest.approx(settings["train_batch"] / steps_s[0])
        assert cfg["train"]["gflop_per_step"] > cfg["eval"]["gflop_per_eval"] > 0
        assert cfg["eval"]["seconds_per_eval"] > 0
        for sampler in ("sde", "ode", "posterior"):
            overhead = cfg["sampler_overhead_per_step"][sampler]
            assert overhead > 0
            four, two = cfg["samplers"][sampler]["4"], cfg["samplers"][sampler]["2"]
            assert four["how"] == "extrapolated" and two["how"] == "measured"
            per_step = cfg["eval"]["seconds_per_eval"] + overhead
            assert four["seconds_per_image"] == pytest.approx(4 * per_step)
            assert two["extrapolated_seconds"] == pytest.approx(2 * per_step)
            assert two["seconds_per_image"] > 0

    speedup = data["bf16_speedup"]["train_images_per_s"]
    assert speedup == pytest.approx(data["configs"]["bf16"]["train"]["images_per_s"]
                                    / data["configs"]["fp32"]["train"]["images_per_s"])
    assert data["official"] is None

    memory = data["memory"]
    assert set(memory) == {"ours/fp32"}
    for cells in memory.values():
        for kind in ("train", "inference"):
            cell = cells[kind]
            assert cell["peak_rss_bytes"] >= cell["baseline_rss_bytes"] > 0
            assert cell["peak_rss_gib"] == pytest.approx(cell["peak_rss_bytes"] / 2**30)
        # Training keeps activations for backward, gradients and Adam moments: more than one no-grad pass.
        assert cells["train"]["peak_rss_bytes"] > cells["inference"]["peak_rss_bytes"]


# ----------------------------------------------------------------------------------------------------------
# irsde_quality
# ----------------------------------------------------------------------------------------------------------


TINY = ["model.net.nf=8", "model.net.depth=2", "data.image_size=32", "data.patch_size=32"]
# The demo experiment is a denoising one; these keys turn it into plain IR-SDE deraining (official options).
RAIN = ["model.sde.kind=irsde", "model.sde.max_sigma=10", "model.sde.eps=0.005",
        "model.sampler.name=posterior", "data.task=rain"]


def save_untrained_checkpoint(path: Path, overrides: list[str]) -> Path:
    """An untrained demo checkpoint as train.py stores it: the weights plus the resolved run config."""
    from omegaconf import OmegaConf

    from core.loading import build_module, compose_experiment

    cfg = compose_experiment("irsde_demo", [*TINY, *overrides])
    torch.manual_seed(0)
    module = build_module(cfg)
    torch.save({"state_dict": module.state_dict(), "config": OmegaConf.to_container(cfg, resolve=True)}, path)
    return path


def demo_items(task: str, count: int) -> list[dict]:
    from data.demo import build_demo_split

    dataset = build_demo_split(task, "test", patch_size=32, image_size=32)
    return [dataset[i] for i in range(count)]


MR_LABELS = ("mr_ode:1", "mr_ode:2", "mr_ode:3", "mr_sde:1", "mr_sde:2")


def test_quality_quick_irsde(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    from benchmarks import irsde_quality
    from core.loading import module_from_checkpoint
    from irsde.mr_sampler import mr_ode
    from irsde.samplers import reverse_posterior

    ckpt = save_untrained_checkpoint(tmp_path / "rain.ckpt", RAIN)
    out, plot = tmp_path / "quality.json", tmp_path / "quality.png"
    irsde_quality.main(["--quick", "--ckpt", str(ckpt), "--out", str(out), "--plot", str(plot)])
    printed = capsys.readouterr().out
    assert "| posterior" in printed and "| mr_ode:3" in printed and "degraded input" in printed
    data = json.loads(out.read_text())

    assert data["task"] == "rain" and data["num_images"] == 2
    assert data["settings"]["requested_steps"] == [5, 2] and data["settings"]["metrics"]["crop_border"] == 0
    labels = ("posterior", "sde", "ode", *MR_LABELS)  # the default plan, one row per sampler:order
    assert data["settings"]["samplers"] == list(labels)
    cells = {(r["label"], r["steps"]): r for r in data["results"]}
    assert set(cells) == {(s, n) for s in labels for n in (5, 2)}
    for (label, _), row in cells.items():
        name, _, order = label.partition(":")
        assert row["sampler"] == name and row["order"] == (int(order) if order else None)
        assert row["nfe"] == row["steps"]
        assert len(row["per_image_psnr"]) == 2 and row["seconds_per_image"] > 0
        assert math.isfinite(row["psnr"]) and row["psnr"] > 0
        assert 0 < row["ssim"] <= 1
        assert row["psnr"] == pytest.approx(sum(row["per_image_psnr"]) / 2)

    # The degraded inputs' PSNR, recomputed from the demo images with numpy.
    items = demo_items("rain", 2)
    expected_input = [numpy_psnr(item["lq"], item["gt"]) for item in items]
    assert data["input"]["per_image_psnr"] == pytest.approx(expected_input, abs=1e-6)

    # One restored image redone by hand: same weights, same seed (seed 0 + image index), posterior, 2 steps.
    module, _ = module_from_checkpoint(ckpt)
    item = items[1]
    generator = torch.Generator().manual_seed(int(item["index"]))
    restored = reverse_posterior(module.sde, module.eval_net, item["lq"][None], steps=2, generator=generator)
    expected = numpy_psnr(restored[0].clamp(0, 1), item["gt"])
    assert cells[("posterior", 2)]["per_image_psnr"][1] == pytest.approx(expected, abs=1e-6)
    # ... and with the third-order MR solver (its default logsnr grid), 5 steps: the order reached the sampler.
    restored = mr_ode(module.sde, module.eval_net, item["lq"][None], steps=5, order=3,
                      generator=torch.Generator().manual_seed(int(item["index"])))
    expected = numpy_psnr(restored[0].clamp(0, 1), item["gt"])
    assert cells[("mr_ode:3", 5)]["per_image_psnr"][1] == pytest.approx(expected, abs=1e-6)

    image = Image.open(plot).convert("RGB")
    colours = {c for _, c in image.getcolors(maxcolors=1_000_000)}
    # matplotlib's C0 .. C6 (C7 is grey, like the reference line): one line colour per sampler:order was drawn
    tab10 = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
             (227, 119, 194)]
    assert set(tab10) <= colours


def test_quality_quick_denoising_caps_steps_at_t_star(tmp_path: Path):
    from benchmarks import irsde_quality
    from core.loading import module_from_checkpoint
    from irsde.mr_sampler import mr_sde
    from irsde.samplers import denoise_ode

    ckpt = save_untrained_checkpoint(tmp_path / "noise.ckpt", [])
    out = tmp_path / "quality.json"
    # t*(sigma 25) is 22 of T=100 for the demo SDE (max_sigma 70, eps 0.04): 50 and 30 both become 22 steps,
    # for the MR solvers too (they start at t* from the noisy image like denoise_ode / denoise_sde).
    irsde_quality.main(["--quick", "--steps", "50", "30", "2", "--ckpt", str(ckpt), "--out", str(out)])
    data = json.loads(out.read_text())

    module, _ = module_from_checkpoint(ckpt)
    t_star = module.sde.optimal_timestep(25)
    assert data["task"] == "noise" and data["settings"]["sampler_options"] == {"sigma": 25}
    labels = ("denoise_ode", "denoise_sde", *MR_LABELS)
    assert data["settings"]["steps_per_sampler"] == {label: [t_star, 2] for label in labels}
    cells = {(r["label"], r["steps"]): r for r in data["results"]}
    assert set(cells) == {(s, n) for s in labels for n in (t_star, 2)}
    assert all(row["nfe"] == row["steps"] for row in cells.values())

    item = demo_items("noise", 1)[0]
    restored = denoise_ode(module.sde, module.eval_net, item["lq"][None], sigma=25, steps=2)
    expected = numpy_psnr(restored[0].clamp(0, 1), item["gt"])
    assert cells[("denoise_ode", 2)]["per_image_psnr"][0] == pytest.approx(expected, abs=1e-6)
    restored = mr_sde(module.sde, module.eval_net, item["lq"][None], sigma=25, steps=2, order=2,
                      generator=torch.Generator().manual_seed(int(item["index"])))
    expected = numpy_psnr(restored[0].clamp(0, 1), item["gt"])
    assert cells[("mr_sde:2", 2)]["per_image_psnr"][0] == pytest.approx(expected, abs=1e-6)
    assert out.with_suffix(".png").is_file()


def test_quality_sampler_labels_and_plans():
    """name[:order] labels: only the MR solvers take an order, within their range; the plan per checkpoint kind,
    --samplers / --steps over it, and samplers of the other kind rejected."""
    from argparse import Namespace

    from benchmarks import irsde_quality as q
    from irsde.sde import IRSDE, DenoisingIRSDE

    assert q.parse_sampler("mr_ode:3") == ("mr_ode", 3) and q.parse_sampler("posterior") == ("posterior", None)
    for bad in ("ode:2", "mr_sde:3", "mr_ode:x", "ddim"):
        with pytest.raises(ValueError):
            q.parse_sampler(bad)
        with pytest.raises(SystemExit):
            q.parse_args(["--samplers", bad])
    assert q.sampler_options("mr_sde:1", {"sigma": 25}, "uniform") == {"sampler": "mr_sde", "sigma": 25,
                                                                       "order": 1, "grid": "uniform"}
    assert q.sampler_options("denoise_ode", {"sigma": 25}, "uniform") == {"sampler": "denoise_ode", "sigma": 25}

    class Module:  # what sampler_plan reads: the SDE's kind and the stored sampler options
        def __init__(self, sde):
            self.sde, self.sampler_options = sde, {"sigma": 25}

    plain = Namespace(sigma=None, samplers=None, steps=None)
    plan, options = q.sampler_plan(Module(IRSDE(10)), plain)
    assert options == {} and plan[0] == ("posterior", [100, 50, 25, 10, 5])
    assert plan[1:] == [(label, [20, 10, 5]) for label in ("sde", "ode", *MR_LABELS)]
    plan, options = q.sampler_plan(Module(DenoisingIRSDE(70)), plain)
    assert options == {"sigma": 25}
    assert plan == [(label, [20, 10, 5, 2]) for label in ("denoise_ode", "denoise_sde", *MR_LABELS)]
    chosen = Namespace(sigma=15, samplers=["mr_ode:2", "denoise_sde"], steps=[3, 7])
    assert q.sampler_plan(Module(DenoisingIRSDE(70)), chosen) == ([("mr_ode:2", [7, 3]), ("denoise_sde", [7, 3])],
                                                                  {"sigma": 15})
    with pytest.raises(SystemExit):
        q.sampler_plan(Module(DenoisingIRSDE(70)), Namespace(sigma=None, samplers=["posterior"], steps=None))
    with pytest.raises(SystemExit):
        q.sampler_plan(Module(IRSDE(10)), Namespace(sigma=None, samplers=["denoise_ode"], steps=None))


# ----------------------------------------------------------------------------------------------------------
# irsde_fast_path
# ----------------------------------------------------------------------------------------------------------


def test_fast_path_quick(tmp_path: Path):
    from benchmarks.irsde_fast_path import main, parse_fast

    assert parse_fast("mr_ode:3@10") == {"label": "fast: mr_ode:3, 10 steps, bf16 + channels_last",
                                         "sampler": "mr_ode", "steps": 10, "precision": "bf16", "order": 3}
    out = tmp_path / "fast.json"
    result = main(["--quick", "--fast", "mr_ode:2@2", "ode@1", "--out", str(out)])
    assert json.loads(out.read_text())["rows"] == result["rows"]
    official, mr, ode = result["rows"]
    assert (official["sampler"], official["nfe"], official["precision"]) == ("posterior", 4, "32")
    assert (mr["nfe"], mr["order"], ode["nfe"]) == (2, 2, 1)
    assert official["speedup_vs_official"] == 1.0
    assert all(r["seconds_per_image"] > 0 for r in result["rows"])


def test_large_photo_quick(tmp_path: Path):
    from benchmarks.irsde_large_photo import main

    names = ["official", "latent:mr_sde:1@5"]  # a pixel and a latent row, float32 and bf16 (a process each)
    result = main(["--quick", "--configs", *names, "--out", str(tmp_path / "large.json")])
    rows = {r["name"]: r for r in result["rows"]}
    assert list(rows) == names and rows["official"]["speedup_vs_official"] == 1.0
    assert [r["precision"] for r in rows.values()] == ["32", "bf16"]
    assert {r["ckpt"] for r in rows.values()} == {"assets/irsde_demo_denoise.ckpt",
                                                  "assets/refusion_latent_demo_denoise.ckpt"}
    # one fresh process per row: each peak is its own and above what the process held before restoring
    assert all(r["peak_rss_bytes"] >= r["rss_before_bytes"] > 0 for r in rows.values())
    assert all(r["psnr"] > r["psnr_input"] + 3 for r in rows.values())  # both shipped models denoise the crop


def test_recipes_reads_validation_curves_of_resumed_runs(tmp_path: Path):
    from benchmarks.irsde_recipes import main

    for folder, rows in (("a/first", [(249, 5.0), (499, 6.0)]), ("a/resumed", [(749, 7.0)]), ("b/run", [(249, 20.0)])):
        path = tmp_path / folder / "csv" / "metrics.csv"
        path.parent.mkdir(parents=True)
        lines = ["epoch,step,train/loss,val/psnr", "0,10,0.1,"] + [f"0,{s},,{p}" for s, p in rows]
        path.write_text("\n".join(lines) + "\n")
    out = tmp_path / "r.json"
    result = main([f"noise={tmp_path / 'a'}", f"x0={tmp_path / 'b'}", "--input-psnr", "19", "--out", str(out)])
    assert [p["step"] for p in result["curves"]["noise"]] == [250, 500, 750]
    assert result["curves"]["x0"] == [{"step": 250, "val_psnr": 20.0}]
    assert out.with_suffix(".png").is_file()
