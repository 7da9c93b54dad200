"""Activation checkpointing (``model.net.checkpointing=true``): peak memory and training-step time, off vs on.

    python -m benchmarks.activation_checkpointing [--device cuda] [--nets irsde_unet dirformer] [--threads 2]
    python -m benchmarks.activation_checkpointing --quick --out /tmp/ckpt.json      (tiny networks: smoke test)

The networks are built from the suite's model configs (configs/model/<file>.yaml, node ``net``) with random
weights, at their official per-device training batch and patch size (NETS below says where each comes from).
One training step = forward, an L1 loss (against zeros), backward and the config's optimizer step.
Each cell (network, precision, checkpointing off/on) runs in a fresh process: ``warmup`` untimed steps, then
``repeats`` timed ones (median reported); its peak memory is torch.cuda.max_memory_allocated on CUDA and the
peak resident set size (VmHWM) on the CPU. A cell that does not fit is recorded as such: CUDA out of memory, or
on the CPU an allocation refused by an address-space limit (growth beyond the imports of at most
--cpu-memory-limit-gib, default 80 % of the memory available at the start), which keeps the probe from waking
the kernel's OOM killer: that one could kill other processes. Precisions: float32, and bf16 autocast (float32
weights, the trainer's precision=bf16-mixed).
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
import torch.nn.functional as F
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf

from benchmarks.common import (
    GIB,
    RESULTS_DIR,
    Precision,
    emit_probe_result,
    format_cell,
    load_average,
    machine_info,
    markdown_table,
    peak_rss_bytes,
    pick_device,
    ratio,
    repeat_timed,
    run_probe,
    speed_main,
)
from core.nn import count_parameters

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "model"
PRECISIONS = {
    "fp32": Precision("fp32", False, False, "float32"),
    "bf16": Precision("bf16", True, False, "bf16 autocast, float32 weights (precision=bf16-mixed)"),
}


@dataclass(frozen=True)
class Net:
    config: str  # configs/model/<config>.yaml
    batch: int
    patch: int
    source: str  # where the batch and patch size come from
    inputs: str  # irsde (x_t, mu, t) | pair (lq, gt) | prior (x, t)
    quick: dict[str, Any] = field(default_factory=dict)  # --quick: tiny network overrides


NETS: dict[str, Net] = {
    "irsde_unet": Net("irsde", 4, 128, "IR-SDE official: batch 4, GT 128 (deraining, deblurring)", "irsde",
                      {"nf": 8, "depth": 2}),
    "irsde_nafnet": Net("irsde_nafnet", 4, 128, "the suite's IR-SDE data configs (4 x 128)", "irsde",
                        {"width": 8, "enc_blk_nums": [1, 2], "dec_blk_nums": [1, 1]}),
    "dirformer": Net("diffir_s1", 8, 192, "DiffIR GoPro stage 1: first progressive stage, 8 x 192 per GPU (the "
                     "largest pixel count per step, with 2 x 384)", "pair",
                     {"n_encoder_res": 1, "dim": 8, "num_blocks": [1, 2, 1, 1], "num_refinement_blocks": 2}),
    "guided_unet": Net("diffpir_prior", 4, 256, "the suite's DiffPIR prior experiments: batch 4 at 256",
                       "prior", {"image_size": 32, "model_channels": 32, "channel_mult": [1, 2],
                                 "attention_resolutions": [2], "num_head_channels": 32}),
}
# name: (paper-size value, --quick value)
SIZES = {"warmup": (1, 1), "repeats": (3, 1)}
QUICK_BATCH, QUICK_PATCH = 2, 16
DEFAULT_OUT = RESULTS_DIR / "activation_checkpointing_{device}.json"
QUICK_OUT = Path(tempfile.gettempdir()) / "activation_checkpointing_quick.json"  # never overwrite real results
DID_NOT_FIT = ("out of memory", "can't allocate memory", "cannot allocate memory")


# ----------------------------------------------------------------------------------------------------------
# One cell
# ----------------------------------------------------------------------------------------------------------


def model_config(name: str, checkpointing: bool, quick: bool) -> DictConfig:
    """The model config's `net` (tiny for --quick, checkpointing set) and `optimizer` nodes."""
    cfg = OmegaConf.load(CONFIGS / f"{NETS[name].config}.yaml")
    net = OmegaConf.merge(cfg.net, NETS[name].quick if quick else {}, {"checkpointing": checkpointing})
    return OmegaConf.create({"net": net, "optimizer": cfg.optimizer})


def build(name: str, checkpointing: bool, quick: bool, device: torch.device) -> tuple[torch.nn.Module, Any]:
    """(network in training mode on `device`, optimizer) from the model config, with random weights."""
    cfg = model_config(name, checkpointing, quick)
    net = instantiate(cfg.net).to(device).train()
    return net, instantiate(cfg.optimizer)(net.parameters())


def make_inputs(name: str, batch: int, patch: int, device: torch.device, seed: int) -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(seed)

    def image() -> torch.Tensor:
        return torch.rand(batch, 3, patch, patch, generator=gen).to(device)

    kind = NETS[name].inputs
    if kind == "irsde":
        return image(), image(), torch.randint(1, 101, (batch,), generator=gen).to(device)
    if kind == "pair":
        return image(), image()
    return image() * 2 - 1, torch.randint(0, 1000, (batch,), generator=gen).to(device)


def measure_cell(name: str, precision: str, checkpointing: bool, settings: dict[str, int], quick: bool,
                 device: torch.device, batch: int, patch: int, seed: int = 0) -> dict[str, Any]:
    """Time `repeats` training steps (after `warmup`) of one configuration in this process; CUDA memory too."""
    torch.manual_seed(seed)  # the same weights (and dropout masks) with checkpointing off and on
    prec = PRECISIONS[precision]
    net, optimizer = build(name, checkpointing, quick, device)
    inputs = make_inputs(name, batch, patch, device, seed)
    losses: list[float] = []

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with prec.autocast(device):
            out = net(*inputs)
        target = torch.zeros_like(out, dtype=torch.float32)
        loss = F.l1_loss(out.float(), target)
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    seconds = repeat_timed(step, device, settings["warmup"], settings["repeats"])
    result: dict[str, Any] = {"fits": True, "params": count_parameters(net), "batch": batch, "patch": patch,
                              "seconds": seconds, "seconds_per_step": statistics.median(seconds),
                              "first_loss": losses[0]}
    if device.type == "cuda":
        optimizer.zero_grad(set_to_none=True)
        result["cuda_max_allocated_bytes"] = int(torch.cuda.max_memory_allocated(device))
        result["cuda_max_reserved_bytes"] = int(torch.cuda.max_memory_reserved(device))
        result["cuda_resident_bytes"] = int(torch.cuda.memory_allocated(device))  # weights + optimizer state
    return result


def virtual_size_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmSize:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmSize in /proc/self/status: use --cpu-memory-limit-gib 0 off Linux")


def did_not_fit(err: BaseException) -> bool:
    return isinstance(err, (MemoryError, torch.OutOfMemoryError)) or any(s in str(err).lower() for s in DID_NOT_FIT)


def probe_main(args: argparse.Namespace, settings: dict[str, int], device: torch.device) -> None:
    """Inside a fresh process: one cell, its timings and peak memory as one JSON line."""
    for node in model_config(args.probe, args.checkpointing, args.quick).values():
        get_class(node._target_)  # imported before the limit: an import must not be what fails
    if device.type == "cpu" and args.cpu_memory_limit_gib:
        # The address space may grow by the limit beyond the imports' (whose mappings exceed their resident
        # size by gigabytes); the resident size grows by less: a refused allocation, never the OOM killer.
        limit = virtual_size_bytes() + int(args.cpu_memory_limit_gib * GIB)
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    baseline = peak_rss_bytes()  # interpreter + imports, before the network exists
    try:
        result = measure_cell(args.probe, args.precision, args.checkpointing, settings, args.quick, device,
                              *batch_and_patch(args, args.probe), seed=args.seed)
    except Exception as err:  # noqa: BLE001 - hydra wraps a refused allocation in its own exception
        if not did_not_fit(err):
            raise
        result = {"fits": False, "error": str(err).splitlines()[0][:300]}
    result.update(peak_rss_bytes=peak_rss_bytes(), baseline_rss_bytes=baseline)
    emit_probe_result(result)


# ----------------------------------------------------------------------------------------------------------
# The grid
# ----------------------------------------------------------------------------------------------------------


def batch_and_patch(args: argparse.Namespace, name: str) -> tuple[int, int]:
    """--batch / --patch, else --quick's, else the network's official per-device values."""
    batch = args.batch or (QUICK_BATCH if args.quick else NETS[name].batch)
    return batch, args.patch or (QUICK_PATCH if args.quick else NETS[name].patch)


def probe_argv(args: argparse.Namespace, settings: dict[str, int], name: str, precision: str,
               checkpointing: bool) -> list[str]:
    batch, patch = batch_and_patch(args, name)
    argv = ["--probe", name, "--precision", precision, "--device", args.device, "--seed", str(args.seed),
            f"--batch={batch}", f"--patch={patch}"]
    argv += [f"--{key.replace('_', '-')}={value}" for key, value in settings.items()]
    argv += ["--checkpointing"] if checkpointing else []
    argv += ["--quick"] if args.quick else []
    argv += ["--threads", str(args.threads)] if args.threads else []
    argv += [f"--cpu-memory-limit-gib={args.cpu_memory_limit_gib}"] if args.cpu_memory_limit_gib else []
    return argv


def peak_gib(cell: dict[str, Any], device: torch.device) -> float | None:
    """The cell's peak memory: CUDA max allocated, or the CPU process's peak RSS above its import baseline."""
    if not cell.get("fits"):
        return None
    if device.type == "cuda":
        return cell["cuda_max_allocated_bytes"] / GIB
    return (cell["peak_rss_bytes"] - cell["baseline_rss_bytes"]) / GIB


NOTES = [
    "a step = zero_grad, forward (inside autocast for bf16), L1 loss of the output against zeros, backward, the "
    "model config's optimizer step; random weights; seconds_per_step = median of `repeats` after `warmup`.",
    "peak_gib: CUDA torch.cuda.max_memory_allocated over the steps (cuda_resident_bytes: weights + optimizer "
    "state after the last step); CPU: peak RSS (VmHWM) of the cell's fresh process minus its RSS after imports.",
    "memory_ratio = peak without / with checkpointing; time_ratio = seconds per step with / without.",
    "first_loss is the same with checkpointing off and on (same seed): the recomputation changes memory and time, "
    "not the numbers.",
]


def benchmark(args: argparse.Namespace, settings: dict[str, int], device: torch.device) -> dict[str, Any]:
    result: dict[str, Any] = {
        "benchmark": "activation_checkpointing", "quick": args.quick, "machine": machine_info(device),
        "settings": {**settings, "nets": list(args.nets), "precisions": list(args.precisions), "seed": args.seed,
                     "cpu_memory_limit_gib": args.cpu_memory_limit_gib if device.type == "cpu" else None},
        "nets": {}, "notes": NOTES,
    }
    for name in args.nets:
        net = NETS[name]
        batch, patch = batch_and_patch(args, name)
        entry: dict[str, Any] = {"config": f"configs/model/{net.config}.yaml", "batch": batch, "patch": patch,
                                 "source": net.source, "cells": {}, "comparison": {}}
        for precision in args.precisions:
            cells = {}
            for checkpointing in (False, True):  # off and on back to back: the same machine load
                key = f"{precision}/{'on' if checkpointing else 'off'}"
                try:
                    cells[checkpointing] = run_probe("benchmarks.activation_checkpointing",
                                                     probe_argv(args, settings, name, precision, checkpointing))
                except RuntimeError as err:  # the process died (killed, crashed): record it, go on
                    cells[checkpointing] = {"fits": False, "error": str(err)[-600:]}
                entry["cells"][key] = cells[checkpointing]
            off, on = cells[False], cells[True]
            entry["comparison"][precision] = {
                "peak_gib_off": peak_gib(off, device), "peak_gib_on": peak_gib(on, device),
                "memory_ratio": ratio(peak_gib(off, device), peak_gib(on, device)),
                "seconds_off": off.get("seconds_per_step"), "seconds_on": on.get("seconds_per_step"),
                "time_ratio": ratio(on.get("seconds_per_step"), off.get("seconds_per_step")),
            }
        result["nets"][name] = entry
    result["machine"]["load_average_at_end"] = load_average()
    return result


def format_report(result: dict[str, Any]) -> str:
    header = ["network", "batch x patch", "precision", "peak GiB off", "peak GiB on", "memory off/on",
              "s/step off", "s/step on", "time on/off"]
    rows = []
    for name, entry in result["nets"].items():
        size = f"{entry['batch']} x {entry['patch']}"
        for precision, c in entry["comparison"].items():
            rows.append([name, size, precision, format_cell(c["peak_gib_off"], ".2f"),
                         format_cell(c["peak_gib_on"], ".2f"), format_cell(c["memory_ratio"], ".2f"),
                         format_cell(c["seconds_off"], ".3f"), format_cell(c["seconds_on"], ".3f"),
                         format_cell(c["time_ratio"], ".2f")])
    device = result["machine"]["device"]
    return f"Activation checkpointing, training step on {device} ('-': did not fit)\n\n" + markdown_table(header,
                                                                                                         rows)


# ----------------------------------------------------------------------------------------------------------
# Entry point
# ----------------------------------------------------------------------------------------------------------


def available_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024 / GIB
    except OSError:
        pass
    return None


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny networks, batch 2 at 16x16")
    parser.add_argument("--out", type=Path, help=f"JSON output (default {DEFAULT_OUT}; --quick: {QUICK_OUT})")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1 or auto")
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's choice)")
    parser.add_argument("--nets", nargs="+", choices=tuple(NETS), default=list(NETS))
    parser.add_argument("--precisions", nargs="+", choices=tuple(PRECISIONS), default=list(PRECISIONS))
    parser.add_argument("--cpu-memory-limit-gib", type=float,
                        help="how far a CPU cell's address space may grow beyond its imports (default: 80%% of "
                        "the memory available now; 0: no limit)")
    parser.add_argument("--batch", type=int, help="per-step batch of every network (default: official; --quick 2)")
    parser.add_argument("--patch", type=int, help="patch size of every network (default: official; --quick 16)")
    parser.add_argument("--seed", type=int, default=0)
    for key, (paper, quick) in SIZES.items():
        parser.add_argument(f"--{key.replace('_', '-')}", type=int, help=f"default {paper} (--quick: {quick})")
    # Internal: run one cell in this (fresh) process.
    parser.add_argument("--probe", choices=tuple(NETS), help=argparse.SUPPRESS)
    parser.add_argument("--precision", choices=tuple(PRECISIONS), default="fp32", help=argparse.SUPPRESS)
    parser.add_argument("--checkpointing", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.cpu_memory_limit_gib is None and not args.probe and (gib := available_gib()):
        args.cpu_memory_limit_gib = round(0.8 * gib, 1)
    return args


def resolve_settings(args: argparse.Namespace) -> dict[str, int]:
    settings = {key: getattr(args, key) if getattr(args, key) is not None else values[1 if args.quick else 0]
                for key, values in SIZES.items()}
    if settings["repeats"] < 1 or settings["warmup"] < 0:
        raise SystemExit("--repeats must be at least 1 and --warmup at least 0")
    return settings


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    default_out = Path(str(DEFAULT_OUT).format(device=pick_device(args.device).type))
    return speed_main(argv, parse_args=lambda _: args, resolve_settings=resolve_settings, probe_main=probe_main,
                      benchmark=benchmark, format_report=format_report, default_out=default_out,
                      quick_out=QUICK_OUT)


if __name__ == "__main__":
    main()
