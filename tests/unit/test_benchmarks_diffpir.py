"""Smoke tests of the DiffPIR benchmarks (benchmarks/diffpir_speed.py, benchmarks/diffpir_quality.py) in their
--quick modes: tiny networks, 32x32 images. Sizes, FLOPs, restored images and scores are recomputed here by
other routes (layer-shape sums, the sampler called directly, numpy PSNR, evaluate.py itself)."""

from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

FFHQ_PARAMS = 93_563_910  # ffhq_10m.pt, counted on the released file (shared/reference/diffpir-official.md)


def numpy_psnr(restored: torch.Tensor, gt: torch.Tensor, border: int = 0) -> float:
    """PSNR of the 8-bit versions of two CHW images in [0, 1], `border` pixels cropped, from the definition."""
    a = np.round(np.clip(restored.numpy().astype(np.float32), 0, 1) * 255).astype(np.float64)
    b = np.round(np.clip(gt.numpy().astype(np.float32), 0, 1) * 255).astype(np.float64)
    if border:
        a, b = a[:, border:-border, border:-border], b[:, border:-border, border:-border]
    return float(10 * np.log10(255.0**2 / np.mean((a - b) ** 2)))


def hooked_flops(net: nn.Module, x: torch.Tensor, t: torch.Tensor) -> int:
    """FLOPs of net(x, t) summed from layer shapes: 2 per multiply-add of every convolution and linear layer, plus
    the two attention products (q k^T and attention x v: 2 x 2 x T x T x C per attention block)."""
    from diffpir.prior.unet import AttentionBlock

    total = 0

    def conv(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        nonlocal total
        taps = module.in_channels // module.groups * math.prod(module.kernel_size)
        total += 2 * output.numel() * taps

    def linear(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        nonlocal total
        total += 2 * output.numel() * module.in_features

    def attention(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        nonlocal total
        b, c, h, w = inputs[0].shape
        total += 2 * 2 * b * (h * w) ** 2 * c

    hooks = []
    for module in net.modules():
        if isinstance(module, (nn.Conv1d, nn.Conv2d)):
            hooks.append(module.register_forward_hook(conv))
        elif isinstance(module, nn.Linear):
            hooks.append(module.register_forward_hook(linear))
        elif isinstance(module, AttentionBlock):
            hooks.append(module.register_forward_hook(attention))
    with torch.no_grad():
        net(x, t)
    for hook in hooks:
        hook.remove()
    return total


# ----------------------------------------------------------------------------------------------------------
# diffpir_speed
# ----------------------------------------------------------------------------------------------------------


def test_speed_benchmarks_the_released_ffhq_configuration():
    from benchmarks import diffpir_speed
    from diffpir.prior.unet import GuidedUNet

    config = diffpir_speed.network_config(quick=False)
    assert config["model_channels"] == 128 and config["num_res_blocks"] == 1 and config["out_channels"] == 6
    assert tuple(config["channel_mult"]) == (1, 1, 2, 2, 4, 4) and tuple(config["attention_resolutions"]) == (16,)
    assert config["num_head_channels"] == 64 and config["use_scale_shift_norm"] and config["resblock_updown"]
    with torch.device("meta"):
        assert sum(p.numel() for p in GuidedUNet(**config).parameters()) == FFHQ_PARAMS


def test_speed_network_build_is_seeded_and_sane():
    from benchmarks import diffpir_speed
    from diffpir.prior.unet import GuidedUNet, small_config

    config = small_config()
    a, b = diffpir_speed.build_network(config, seed=3), diffpir_speed.build_network(config, seed=3)
    reference = GuidedUNet(**config)
    assert [n for n, _ in a.named_parameters()] == [n for n, _ in reference.named_parameters()]
    for (name, p), q in zip(a.named_parameters(), b.parameters()):
        assert torch.equal(p, q), name  # the same seed gives the same weights in every process
        assert p.device.type == "cpu" and torch.isfinite(p).all()
    weight = dict(a.named_parameters())["input_blocks.0.0.weight"]  # the stem: fan-in 3 x 3 x 3 = 27
    assert weight.std().item() == pytest.approx(27**-0.5, rel=0.2)
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        out = a(x, torch.tensor([500]))
    assert out.shape == (1, 6, 32, 32) and torch.isfinite(out).all() and out.std() > 0


def test_speed_quick(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    from benchmarks import diffpir_speed
    from diffpir.prior.unet import GuidedUNet, small_config
    from diffpir.schedule import DDPMSchedule

    out = tmp_path / "diffpir_speed.json"
    # One memory probe (a fresh Python process, ~5 s of imports); one thread on the shared 2-core machine.
    argv = ["--quick", "--threads", "1", "--memory-precisions", "fp32", "--memory-tasks", "inpainting"]
    diffpir_speed.main([*argv, "--out", str(out)])
    printed = capsys.readouterr().out
    assert "s / network evaluation" in printed and "deblur_gaussian: s / NFE" in printed
    data = json.loads(out.read_text())
    assert data["machine"]["torch_threads"] == 1 and data["machine"]["device"] == "cpu"
    assert len(data["machine"]["load_average_at_end"]) == 3
    s = data["settings"]
    assert (s["image_size"], s["kernel_size"], s["nfe"], s["batch"]) == (32, 9, 3, 1)
    assert s["tasks"] == ["sr_x4", "deblur_gaussian", "inpainting"]

    reference = GuidedUNet(**small_config())
    network = data["network"]
    assert network["params"] == sum(p.numel() for p in reference.parameters())
    expected_flops = hooked_flops(reference.eval(), torch.zeros(1, 3, 32, 32), torch.tensor([500]))
    assert network["flops_per_eval"] == expected_flops
    assert network["gflop_per_eval"] == pytest.approx(expected_flops / 1e9)

    # quad timesteps from 999 with 3 NFEs, all at or below the official t_start 999: 3 evaluations
    nfe = len(DDPMSchedule().timesteps(3, "quad", 999))
    assert nfe == 3
    for name in ("fp32", "bf16"):
        cell = data["configs"][name]
        assert len(cell["network"]["seconds"]) == 1 and cell["network"]["seconds_per_eval"] > 0
        for task in s["tasks"]:
            entry = cell["tasks"][task]
            assert entry["nfe"] == nfe and entry["seconds_per_image"] > 0
            assert entry["seconds_per_nfe"] == pytest.approx(entry["seconds_per_image"] / nfe)
            extrapolated = entry["extrapolated"]["100"]
            assert extrapolated["seconds_per_image"] == pytest.approx(100 * entry["seconds_per_image"] / nfe)
            assert "extrapolated" in extrapolated["how"]
            outside = entry["outside_network"]
            assert outside["share"] == pytest.approx(outside["dummy_seconds_per_image"] / entry["seconds_per_image"])
            assert 0 < outside["share"] < 1  # a network returning zeros is cheaper than the network
            assert outside["dummy_seconds_per_nfe"] == pytest.approx(outside["dummy_seconds_per_image"] / nfe)
    fp32, bf16 = data["configs"]["fp32"], data["configs"]["bf16"]
    ups = data["bf16_speedup"]
    assert ups["seconds_per_eval"] == pytest.approx(
        fp32["network"]["seconds_per_eval"] / bf16["network"]["seconds_per_eval"]
    )
    for task in s["tasks"]:
        assert ups["tasks"][task] == pytest.approx(
            fp32["tasks"][task]["seconds_per_image"] / bf16["tasks"][task]["seconds_per_image"]
        )

    assert set(data["memory"]) == {"fp32/inpainting"}
    cell = data["memory"]["fp32/inpainting"]
    assert cell["peak_rss_bytes"] >= cell["baseline_rss_bytes"] > 0
    assert cell["peak_rss_gib"] == pytest.approx(cell["peak_rss_bytes"] / 2**30)


# ----------------------------------------------------------------------------------------------------------
# diffpir_quality
# ----------------------------------------------------------------------------------------------------------


def tiny_prior() -> nn.Module:
    from diffpir.prior.unet import GuidedUNet, small_config

    torch.manual_seed(1)
    return GuidedUNet(**small_config(image_size=32, channel_mult=(1, 2), num_head_channels=32)).eval()


@pytest.fixture(scope="module")
def quality_run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    from benchmarks import diffpir_quality

    tmp = tmp_path_factory.mktemp("diffpir_quality")
    prior = tiny_prior()
    prior_path = tmp / "prior.pt"
    torch.save(prior.state_dict(), prior_path)
    out, plot = tmp / "quality.json", tmp / "quality.png"
    diffpir_quality.main(
        ["--quick", "--prior", str(prior_path), "--threads", "1", "--seed", "5", "--out", str(out), "--plot", str(plot)]
    )
    return {"prior": prior, "prior_path": prior_path, "data": json.loads(out.read_text()), "plot": plot, "tmp": tmp}


def test_quality_needs_a_prior_unless_quick(tmp_path: Path):
    from benchmarks import diffpir_quality

    with pytest.raises(SystemExit):
        diffpir_quality.parse_args([])
    with pytest.raises(SystemExit):
        diffpir_quality.parse_args(["--prior", str(tmp_path / "missing.ckpt")])
    args = diffpir_quality.parse_args(["--prior", __file__])
    assert (
        args.nfe == [20, 50, 100]
        and args.max_images is None
        and args.tasks == ["inpainting", "sr_x2", "deblur_gaussian"]
    )


def test_quality_quick_recomputed_by_hand(quality_run: dict):
    from data.demo import build_demo_split
    from data.resize import imresize
    from diffpir.kernels import gaussian_kernel, official_gaussian_sigma
    from diffpir.operators import Blur, Inpainting, SuperResolution
    from diffpir.sampler import diffpir_sample
    from diffpir.schedule import DDPMSchedule
    from diffpir.tasks import generated_mask

    data, prior = quality_run["data"], quality_run["prior"]
    assert data["num_images"] == 2 and data["images"] == ["face090", "face091"]
    assert data["settings"]["nfe"] == [2, 3] and data["settings"]["metrics"]["crop_border"] == 0
    assert not data["settings"]["metrics"]["y_channel"]
    assert set(data["tasks"]) == {"inpainting", "sr_x2", "deblur_gaussian"}
    for entry in data["tasks"].values():
        assert [r["nfe"] for r in entry["results"]] == [2, 3]
        for row in entry["results"]:
            assert len(row["per_image_psnr"]) == 2 and row["seconds_per_image"] > 0
            assert row["psnr"] == pytest.approx(sum(row["per_image_psnr"]) / 2)
            assert 0 < row["ssim"] <= 1
    assert data["tasks"]["sr_x2"]["input"] is not None  # a 16x16 measurement is scored bicubic-upsampled

    dataset = build_demo_split("inpaint", "test", patch_size=32, image_size=32, source="faces")
    schedule = DDPMSchedule()
    # Official per-task settings (σ_n as the benchmark sets it), written out here.
    for position in (0, 1):
        item = dataset[position]
        index, gt = int(item["index"]), item["gt"][None]
        cases = {}
        gen = torch.Generator().manual_seed(5 + index)  # --seed 5 plus the image index
        mask = generated_mask("box", 32, 32, index)[None]
        op = Inpainting(mask)
        y = op.measure(gt, 0.0, gen)
        cases["inpainting"] = (
            y,
            diffpir_sample(prior, op, y, schedule, sigma_n=0.0, lam=1.0, zeta=1.0, nfe=2, t_start=999, generator=gen),
        )
        gen = torch.Generator().manual_seed(5 + index)
        op = Blur(gaussian_kernel(9, official_gaussian_sigma(index) * 9 / 61))
        y = op.measure(gt, 0.01, gen)
        cases["deblur_gaussian"] = (
            y,
            diffpir_sample(prior, op, y, schedule, sigma_n=0.01, lam=7.0, zeta=0.3, nfe=2, t_start=999, generator=gen),
        )
        gen = torch.Generator().manual_seed(5 + index)
        y = imresize(gt.double(), scale=0.5).float()
        y = y + 0.01 * torch.randn(y.shape, generator=gen)
        cases["sr_x2"] = (
            y,
            diffpir_sample(
                prior,
                SuperResolution(2),
                y,
                schedule,
                sigma_n=0.01,
                lam=6.0,
                zeta=0.25,
                nfe=2,
                t_start=999,
                generator=gen,
            ),
        )
        for task, (y, restored) in cases.items():
            entry = data["tasks"][task]
            two = entry["results"][0]
            border = 2 if task == "sr_x2" else 0  # SR scores crop `scale` pixels, as the official DiffPIR
            assert entry["crop_border"] == border
            assert two["per_image_psnr"][position] == pytest.approx(numpy_psnr(restored[0], gt[0], border),
                                                                     abs=1e-6), task
            baseline = imresize(y, scale=2).clamp(0, 1) if task == "sr_x2" else y  # SR: the bicubic upsampling
            assert entry["input"]["per_image_psnr"][position] == pytest.approx(numpy_psnr(baseline[0], gt[0], border),
                                                                             abs=1e-6), task
    assert quality_run["plot"].is_file() and quality_run["plot"].stat().st_size > 1000


def test_quality_matches_evaluate_py(quality_run: dict):
    """The benchmark's numbers are those of `python evaluate.py model=diffpir ...` with the same arguments (for
    SR also the border crop of `scale` pixels)."""
    import evaluate

    for task, extra in (("deblur_gaussian", ["kernel_size=9"]), ("sr_x2", [])):
        out = quality_run["tmp"] / f"eval_{task}"
        evaluate.main(["model=diffpir", f"prior_ckpt={quality_run['prior_path']}", "data=demo_faces", f"task={task}",
                       *extra, "noise_sigma=0.01", "nfe=3", "max_images=2", "seed=5", "perceptual=false",
                       "save_images=false", "panels=0", "progress=false", f"out={out}"])
        with open(out / "per_image.csv") as f:
            rows = list(csv.DictReader(f))
        row = next(r for r in quality_run["data"]["tasks"][task]["results"] if r["nfe"] == 3)
        assert [float(r["psnr"]) for r in rows] == pytest.approx(row["per_image_psnr"], abs=1e-5), task
        assert [float(r["ssim"]) for r in rows] == pytest.approx(row["per_image_ssim"], abs=1e-5), task
