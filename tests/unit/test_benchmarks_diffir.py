"""Smoke test of the DiffIR benchmark (benchmarks/diffir_speed.py) in its --quick mode (tiny networks, 32x32),
with parameter and FLOP counts checked against sums written out here from the layer shapes."""

from __future__ import annotations

import json
import os
import statistics
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

IPR = 256  # the IPR width, fixed by the official CPEN (4 * 64)


def conv_params(c_in: int, c_out: int) -> int:
    return 9 * c_in * c_out + c_out  # 3x3 kernel + bias


def conv_flops(c_in: int, c_out: int, pixels: int) -> int:
    return 2 * 9 * c_in * c_out * pixels  # one multiply and one add per kernel tap and output value


def cpen_layers(c_in: int, n_encoder_res: int) -> list[tuple[int, int]]:
    """(in, out) channels of the CPEN's 3x3 convolutions: stem, residual blocks, three widening convs."""
    return [(c_in, 64), *[(64, 64)] * (2 * n_encoder_res), (64, 128), (128, 128), (128, 256)]


def cpen_params(c_in: int, n_encoder_res: int) -> int:
    mlp = 2 * (IPR * IPR + IPR)
    return sum(conv_params(a, b) for a, b in cpen_layers(c_in, n_encoder_res)) + mlp


def cpen_flops(c_in: int, n_encoder_res: int, size: int) -> int:
    pixels = (size // 4) ** 2  # the CPEN works on the pixel-unshuffled (by 4) image
    return sum(conv_flops(a, b, pixels) for a, b in cpen_layers(c_in, n_encoder_res)) + 2 * 2 * IPR * IPR


def test_flop_counter_counts_grouped_convolution_backward_like_its_forward():
    from benchmarks.diffir_speed import flop_counter

    torch.manual_seed(0)
    for groups in (1, 4, 16):  # dense, grouped, depth-wise
        conv = torch.nn.Conv2d(16, 16, 3, padding=1, groups=groups, bias=False)
        x = torch.rand(2, 16, 8, 8, requires_grad=True)
        forward = 2 * 9 * (16 // groups) * 16 * 8 * 8 * 2  # 2 FLOPs per tap, per output value, batch 2
        with flop_counter() as counter:
            conv(x).sum().backward()  # forward, then the input and weight gradients: one forward's worth each
        assert counter.get_total_flops() == 3 * forward
        with flop_counter() as counter:
            conv(x.detach()).sum().backward()  # no input gradient
        assert counter.get_total_flops() == 2 * forward


def test_official_gopro_configuration_is_benchmarked():
    from benchmarks import diffir_speed

    for stage in (1, 2):
        cfg = diffir_speed.network_config(stage, quick=False)
        assert cfg["dim"] == 48 and cfg["num_blocks"] == [3, 5, 6, 6] and cfg["num_refinement_blocks"] == 4
        assert cfg["heads"] == [1, 2, 4, 8] and cfg["ffn_expansion_factor"] == 2.0 and cfg["bias"] is False
        assert cfg["LayerNorm_type"] == "WithBias" and cfg["n_encoder_res"] == 5 and cfg["scale"] is None
    s2 = diffir_speed.network_config(2, quick=False)
    assert (s2["timesteps"], s2["n_denoise_res"], s2["linear_start"], s2["linear_end"]) == (4, 1, 0.1, 0.99)


def test_diffir_speed_quick(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    from benchmarks import diffir_speed
    from diffir.dirformer import DIRformer

    out = tmp_path / "diffir.json"
    # Memory probes of one stage and precision only: each probe is a fresh Python process (~5 s of imports).
    # One thread: on a shared 2-core machine two OpenMP threads per process spin against each other.
    argv = ["--quick", "--threads", "1", "--memory-stages", "2", "--memory-precisions", "fp32", "--out", str(out)]
    diffir_speed.main(argv)
    printed = capsys.readouterr().out
    assert "IPR chain" in printed and "training images/s" in printed and "31x26 -> 31x26" in printed
    data = json.loads(out.read_text())
    s = data["settings"]
    assert (s["eval_size"], s["odd_height"], s["odd_width"], s["train_batch"], s["train_size"]) == (32, 31, 26, 2, 32)
    machine = data["machine"]
    assert machine["device"] == "cpu" and machine["torch_version"] == torch.__version__
    assert machine["torch_threads"] == 1
    assert len(machine["load_average_at_end"]) == 3

    cfg = diffir_speed.network_config(1, quick=True)
    n_res, size = cfg["n_encoder_res"], s["eval_size"]
    g_args = {
        k: cfg[k]
        for k in (
            "dim",
            "num_blocks",
            "num_refinement_blocks",
            "heads",
            "ffn_expansion_factor",
            "bias",
            "LayerNorm_type",
        )
    }
    dirformer_params = sum(p.numel() for p in DIRformer(**g_args).parameters())
    denoiser_params = (2 * IPR + 1) * IPR + IPR + IPR * IPR + IPR  # Linear(513, 256) + one Linear(256, 256)
    # CPEN_S1 sees lq and gt unshuffled by 4 (2 x 48 channels), CPEN_S2 the lq alone (48).
    expected_params = {
        "1": {"dirformer": dirformer_params, "cpen": cpen_params(96, n_res), "denoiser": 0},
        "2": {"dirformer": dirformer_params, "cpen": cpen_params(48, n_res), "denoiser": denoiser_params},
    }
    # The 4-step IPR chain: per step Linear(513 -> 256) and Linear(256 -> 256), 2 FLOPs per multiply-add.
    denoiser_flops = 4 * 2 * ((2 * IPR + 1) * IPR + IPR * IPR)
    expected_flops = {
        "1": {"cpen": cpen_flops(96, n_res, size)},
        "2": {"cpen": cpen_flops(48, n_res, size), "denoiser": denoiser_flops},
    }
    # A training step on a batch of two train_size (= eval_size) images: forward (2 images) plus backward, where
    # every layer computes the input and the weight gradient (a forward's worth each), except that the first
    # convolutions of the DIRformer (3 -> dim, full size) and of the CPEN (on the /4 grid) see the images, which
    # need no gradient; stage 2 also runs the frozen teacher CPEN_S1 forward only.
    assert s["train_size"] == size
    batch, dim, grid = s["train_batch"], cfg["dim"], (size // 4) ** 2
    whole = {k: data["stages"][k]["flops"]["gflops"] * 1e9 for k in ("1", "2")}
    first_convs = {k: conv_flops(3, dim, size**2) + conv_flops(c, 64, grid) for k, c in (("1", 96), ("2", 48))}
    expected_train_flops = {
        "1": batch * (3 * whole["1"] - first_convs["1"]),
        "2": batch * (3 * whole["2"] - first_convs["2"] + cpen_flops(96, n_res, size)),
    }

    for stage in ("1", "2"):
        entry = data["stages"][stage]
        params = entry["params"]
        assert {k: params[k] for k in ("dirformer", "cpen", "denoiser")} == expected_params[stage]
        assert params["total"] == sum(expected_params[stage].values())

        flops = entry["flops"]
        for part, value in expected_flops[stage].items():
            assert flops["parts_gflops"][part] * 1e9 == pytest.approx(value, rel=1e-12)
        parts = [flops["parts_gflops"][k] for k in ("dirformer", *expected_flops[stage])]
        assert flops["gflops"] == pytest.approx(sum(parts), rel=1e-12) and flops["parts_gflops"]["dirformer"] > 0
        assert flops["gmacs"] == pytest.approx(flops["gflops"] / 2)
        assert flops["share"]["dirformer"] == pytest.approx(flops["parts_gflops"]["dirformer"] / flops["gflops"])

        for name in ("fp32", "bf16"):
            cell = entry["configs"][name]
            for kind, shape in (("inference", [32, 32]), ("odd_size", [31, 26])):
                timing = cell[kind]
                assert timing["input_shape"] == timing["output_shape"] == shape and timing["same_size"]
                assert timing["padded_to"] == [32, 32]
                assert len(timing["seconds"]) == s["repeats"] and min(timing["seconds"]) > 0
                assert timing["seconds_per_image"] == pytest.approx(statistics.median(timing["seconds"]))
            train = cell["train"]
            assert len(train["seconds_per_step"]) == s["train_steps"]
            expected_ips = s["train_batch"] / statistics.median(train["seconds_per_step"])
            assert train["images_per_s"] == pytest.approx(expected_ips)
            assert train["gflop_per_step"] * 1e9 == pytest.approx(expected_train_flops[stage], rel=1e-12)
        ups = entry["bf16_speedup"]
        fp32, bf16 = entry["configs"]["fp32"], entry["configs"]["bf16"]
        assert ups["train_images_per_s"] == pytest.approx(bf16["train"]["images_per_s"] / fp32["train"]["images_per_s"])
        assert ups["seconds_per_image"] == pytest.approx(
            fp32["inference"]["seconds_per_image"] / bf16["inference"]["seconds_per_image"]
        )

    s2_share = data["stages"]["2"]["flops"]["share"]
    assert s2_share["ipr_chain"] == pytest.approx(s2_share["cpen"] + s2_share["denoiser"])
    assert data["dirformer_dominates_stage2"] == (s2_share["dirformer"] > s2_share["ipr_chain"])

    memory = data["memory"]
    assert set(memory) == {"s2/fp32"}
    cells = memory["s2/fp32"]
    for kind in ("train", "inference"):
        assert cells[kind]["peak_rss_bytes"] >= cells[kind]["baseline_rss_bytes"] > 0
        assert cells[kind]["peak_rss_gib"] == pytest.approx(cells[kind]["peak_rss_bytes"] / 2**30)
    # Training keeps activations for backward, gradients, Adam moments and the EMA copy.
    assert cells["train"]["peak_rss_bytes"] > cells["inference"]["peak_rss_bytes"]
