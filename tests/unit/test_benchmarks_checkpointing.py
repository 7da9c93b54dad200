"""benchmarks/activation_checkpointing.py: its --quick mode end to end (fresh processes per cell, JSON), every
network's training step with checkpointing off and on, and the paper-size settings it benchmarks."""

from __future__ import annotations

import json

import pytest
import torch

from benchmarks import activation_checkpointing as bench


def test_quick_mode_writes_both_cells_and_their_comparison(tmp_path):
    out = tmp_path / "ckpt.json"
    bench.main(["--quick", "--nets", "irsde_unet", "--precisions", "fp32", "--threads", "1", "--out", str(out)])
    data = json.loads(out.read_text())
    assert data["quick"] and data["settings"]["nets"] == ["irsde_unet"]
    entry = data["nets"]["irsde_unet"]
    assert (entry["batch"], entry["patch"], entry["config"]) == (2, 16, "configs/model/irsde.yaml")
    off, on = entry["cells"]["fp32/off"], entry["cells"]["fp32/on"]
    assert off["fits"] and on["fits"] and off["params"] == on["params"]
    assert off["first_loss"] == on["first_loss"]  # same weights and inputs: checkpointing changes no number
    assert off["peak_rss_bytes"] > off["baseline_rss_bytes"] > 0
    comparison = entry["comparison"]["fp32"]
    assert comparison["seconds_off"] == off["seconds_per_step"] > 0 and comparison["seconds_on"] > 0
    assert comparison["memory_ratio"] == pytest.approx(comparison["peak_gib_off"] / comparison["peak_gib_on"])
    assert comparison["time_ratio"] == pytest.approx(comparison["seconds_on"] / comparison["seconds_off"])


@pytest.mark.parametrize("name", list(bench.NETS))
def test_each_network_trains_alike_with_checkpointing_off_and_on(name):
    settings, cpu = {"warmup": 0, "repeats": 2}, torch.device("cpu")
    off, on = (bench.measure_cell(name, "fp32", ck, settings, True, cpu, batch=2, patch=16) for ck in (False, True))
    assert off["first_loss"] == on["first_loss"] and off["params"] == on["params"]
    assert len(off["seconds"]) == len(on["seconds"]) == 2


def test_paper_size_networks_and_official_batches():
    assert {name: (net.batch, net.patch) for name, net in bench.NETS.items()} == {
        "irsde_unet": (4, 128), "irsde_nafnet": (4, 128), "dirformer": (8, 192), "guided_unet": (4, 256)}
    from hydra.utils import instantiate

    with torch.device("meta"):  # the full-size configs, without allocating them
        unet = instantiate(bench.model_config("irsde_unet", True, quick=False).net)
    assert sum(p.numel() for p in unet.parameters()) == 137_147_523  # the official nf 64, depth 4 network
    assert unet.checkpointing
