"""DiffIR size, compute, speed and memory: the official GoPro networks of stage 1 and stage 2.

    python -m benchmarks.diffir_speed [--device cuda] [--repeats 5]
    python -m benchmarks.diffir_speed --quick --out /tmp/diffir.json       (tiny network: smoke test only)

The networks are the defaults of configs/model/diffir_s1.yaml and diffir_s2.yaml, which are the official GoPro
deblurring options (dim 48, blocks [3, 5, 6, 6], 4 refinement blocks, heads [1, 2, 4, 8], FFN factor 2, no bias,
WithBias LayerNorm, 5 CPEN residual blocks; stage 2 adds the IPR denoiser and its T = 4 DDPM). Reported:

* parameters of DiffIRS1 and DiffIRS2, split into the DIRformer, the CPEN and the IPR denoiser;
* FLOPs of one 256x256 restoration (torch.utils.flop_counter: convolutions and matrix products only; grouped
  convolution backward counted right, see ``conv_backward_flops``), stage 1 as
  ``net(lq, gt)`` and stage 2 as ``net(lq)`` (CPEN_S2 + the 4-step IPR chain + the DIRformer), each part counted
  on its own and checked against the whole;
* seconds per 256x256 image in eval mode (median of --repeats runs after --warmup untimed ones), float32 and
  bf16 autocast + channels_last, all in the same run, the four (stage, precision) cells timed round-robin so
  that the changing load of a shared machine hits them alike;
* the same for an odd-sized image (default 255x250): padded to the network's multiple, restored, cropped back;
* training throughput (images/s, median step time) at batch 2, 128x128: the suite's own
  ``DiffIRStage1Module.training_loss`` (L1) and ``DiffIRStage2Module.training_loss`` in the joint phase (L1 +
  IPR loss through the whole chain, frozen teacher CPEN), then backward, the Adam step and the EMA update;
* peak memory of each (stage, precision, training / inference) cell in a fresh subprocess (peak RSS; on CUDA also
  torch.cuda.max_memory_allocated).
The tables are printed (markdown) and the JSON written to --out.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
from omegaconf import OmegaConf
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.common import (
    GIB,
    PRECISIONS,
    REPO_ROOT,
    RESULTS_DIR,
    Precision,
    emit_probe_result,
    format_cell,
    load_average,
    machine_info,
    markdown_table,
    peak_rss_bytes,
    ratio,
    ru_maxrss_bytes,
    run_probes,
    speed_main,
    timed,
)
from core.ema import ema_update
from core.nn import count_parameters, pad_to_multiple
from diffir.cpen import IPR_DIM
from diffir.networks import DiffIRS1, DiffIRS2
from diffir.stage1 import DiffIRStage1Module
from diffir.stage2 import DiffIRStage2Module

MODEL_CONFIGS = {
    1: REPO_ROOT / "configs" / "model" / "diffir_s1.yaml",
    2: REPO_ROOT / "configs" / "model" / "diffir_s2.yaml",
}
NETWORKS = {1: DiffIRS1, 2: DiffIRS2}
# --quick: the same architecture shrunk to seconds (the IPR stays 256-d, the DDPM keeps T = 4).
QUICK_NET = {
    "dim": 8,
    "num_blocks": [1, 1, 1, 1],
    "num_refinement_blocks": 1,
    "heads": [1, 1, 1, 1],
    "n_encoder_res": 1,
}
STAGES = (1, 2)

# name: (paper-size value, --quick value)
SIZES = {
    "eval_size": (256, 32),
    "odd_height": (255, 31),
    "odd_width": (250, 26),
    "train_batch": (2, 2),
    "train_size": (128, 32),
    "warmup": (1, 1),
    "repeats": (3, 1),
    "train_steps": (3, 1),
}
DEFAULT_OUT = RESULTS_DIR / "diffir_speed.json"
QUICK_OUT = Path(tempfile.gettempdir()) / "diffir_speed_quick.json"  # never overwrite the real results


# ----------------------------------------------------------------------------------------------------------
# Networks
# ----------------------------------------------------------------------------------------------------------


def model_config(stage: int) -> dict[str, Any]:
    """The stage's model config (configs/model/diffir_s<stage>.yaml) as a plain dict."""
    return OmegaConf.to_container(OmegaConf.load(MODEL_CONFIGS[stage]), resolve=True)


def network_config(stage: int, quick: bool) -> dict[str, Any]:
    """Constructor arguments of the stage's network: the config's defaults (official GoPro), or tiny."""
    cfg = {k: v for k, v in model_config(stage)["net"].items() if k != "_target_"}
    return {**cfg, **QUICK_NET} if quick else cfg


def build_network(stage: int, quick: bool, seed: int) -> nn.Module:
    torch.manual_seed(seed)  # same initial weights in every process and every precision configuration
    return NETWORKS[stage](**network_config(stage, quick))


def param_split(net: nn.Module, stage: int) -> dict[str, int]:
    """Parameters of the whole network and of its parts (the DDPM shares the CPEN and the denoiser)."""
    cpen = net.E if stage == 1 else net.condition
    split = {
        "total": count_parameters(net),
        "dirformer": count_parameters(net.G),
        "cpen": count_parameters(cpen),
        "denoiser": count_parameters(net.denoise) if stage == 2 else 0,
    }
    if sum(v for k, v in split.items() if k != "total") != split["total"]:
        raise RuntimeError(f"stage-{stage} parameters do not add up: {split}")
    return split


# ----------------------------------------------------------------------------------------------------------
# Inputs
# ----------------------------------------------------------------------------------------------------------


def random_images(
    batch: int, height: int, width: int, device: torch.device, seed: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(lq, gt, IPR noise) in [0, 1] / N(0, 1): the content does not change the networks' cost."""
    gen = torch.Generator().manual_seed(seed)
    gt = torch.rand(batch, 3, height, width, generator=gen)
    lq = (gt + 0.1 * torch.randn(gt.shape, generator=gen)).clamp(0, 1)
    noise = torch.randn(batch, IPR_DIM, generator=gen)
    return lq.to(device), gt.to(device), noise.to(device)


# ----------------------------------------------------------------------------------------------------------
# FLOPs
# ----------------------------------------------------------------------------------------------------------


def conv_backward_flops(
    grad_out_shape: list[int],
    x_shape: list[int],
    w_shape: list[int],
    _bias: Any,
    _stride: Any,
    _padding: Any,
    _dilation: Any,
    transposed: bool,
    _output_padding: Any,
    _groups: int,
    output_mask: list[bool],
    out_shape: Any = None,
    **kwargs: Any,
) -> int:
    """FLOPs of ``aten.convolution_backward``: each requested gradient (input, weight) costs as many multiply-adds
    as the forward convolution, i.e. (batch x output positions) x (weight elements), which counts groups right.

    torch's own formula (torch 2.14) counts the weight gradient of a grouped convolution as if it were dense, so
    the DIRformer's depth-wise convolutions would be over-counted by their channel count (65x for 64 channels).
    """
    positions = x_shape if transposed else grad_out_shape  # a transposed conv visits every input position
    macs = positions[0] * math.prod(positions[2:]) * math.prod(w_shape)
    return 2 * macs * (int(bool(output_mask[0])) + int(bool(output_mask[1])))


def flop_counter() -> FlopCounterMode:
    """torch's FLOP counter with the convolution-backward formula above."""
    return FlopCounterMode(display=False, custom_mapping={torch.ops.aten.convolution_backward: conv_backward_flops})


def flops_of(fn: Callable[[], Any]) -> int:
    with torch.no_grad(), flop_counter() as counter:
        fn()
    return int(counter.get_total_flops())


def inference_flops(net: nn.Module, stage: int, size: int, seed: int) -> dict[str, Any]:
    """FLOPs of one size x size restoration (float32, CPU), the whole and each part counted separately."""
    net = net.eval()
    lq, gt, noise = random_images(1, size, size, torch.device("cpu"), seed)
    lq_pad, _, _ = pad_to_multiple(lq, net.G.size_multiple)
    gt_pad, _, _ = pad_to_multiple(gt, net.G.size_multiple)  # same size as lq (no SR here)
    total = flops_of(lambda: net(lq, gt) if stage == 1 else net(lq, noise=noise))
    with torch.no_grad():
        if stage == 1:
            ipr = net.E(lq_pad, gt_pad)
            parts = {"cpen": flops_of(lambda: net.E(lq_pad, gt_pad))}
        else:
            cond = net.condition(lq_pad)
            ipr = net.diffusion.sample(cond, noise)
            parts = {
                "cpen": flops_of(lambda: net.condition(lq_pad)),
                "denoiser": flops_of(lambda: net.diffusion.sample(cond, noise)),
            }
    parts["dirformer"] = flops_of(lambda: net.G(lq_pad, ipr))
    if sum(parts.values()) != total:
        raise RuntimeError(f"stage-{stage} FLOPs of the parts {parts} do not add up to the whole ({total})")
    result: dict[str, Any] = {
        "size": size,
        "flops": total,
        "gflops": total / 1e9,
        "gmacs": total / 2e9,
        "parts_gflops": {k: v / 1e9 for k, v in parts.items()},
        "share": {k: v / total for k, v in parts.items()},
    }
    if stage == 2:  # the IPR chain: CPEN_S2 (the condition) + T denoiser steps
        chain = parts["cpen"] + parts["denoiser"]
        result["parts_gflops"]["ipr_chain"] = chain / 1e9
        result["share"]["ipr_chain"] = chain / total
        result["denoiser_steps"] = int(net.config["timesteps"])
    return result


# ----------------------------------------------------------------------------------------------------------
# Timing
# ----------------------------------------------------------------------------------------------------------


def interleaved_seconds(
    fns: dict[str, Callable[[], Any]], device: torch.device, warmup: int, repeats: int
) -> dict[str, list[float]]:
    """Seconds of ``repeats`` timed calls of every function after ``warmup`` untimed ones each, taken round-robin
    (the order rotating every round), so that a change in the load of a shared machine hits every cell alike."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    names = list(fns)
    seconds: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            seconds[name].append(timed(fns[name], device)[1])
    return seconds


def inference_runner(
    net: nn.Module, stage: int, precision: Precision, device: torch.device, height: int, width: int, seed: int
) -> tuple[Callable[[], torch.Tensor], dict[str, Any]]:
    """(restore, shapes): ``restore()`` restores one height x width image (batch 1, eval mode, no_grad) as a user
    would, S1 ``net(lq, gt)`` and S2 ``net(lq)``; it is called once here (the first warm-up) for the shapes."""
    net = precision.prepare(net, device).eval()
    lq, gt, noise = random_images(1, height, width, device, seed)
    lq, gt = precision.layout(lq), precision.layout(gt)

    @torch.no_grad()
    def restore() -> torch.Tensor:
        with precision.autocast(device):
            return net(lq, gt) if stage == 1 else net(lq, noise=noise)

    out_shape = list(restore().shape[-2:])
    multiple = net.G.size_multiple
    shapes = {
        "input_shape": [height, width],
        "padded_to": [height + (-height) % multiple, width + (-width) % multiple],
        "output_shape": out_shape,
        "same_size": out_shape == [height, width],
    }
    return restore, shapes


def build_module(stage: int, net: nn.Module, precision: Precision) -> nn.Module:
    """The suite's training module of the stage around ``net``, with the config's optimizer, losses and EMA.

    Stage 2 starts in the joint phase (encoder_iter 0: CPEN_S2, denoiser and DIRformer all learn); its teacher
    CPEN_S1 keeps its random initialisation, which costs the same as trained weights.
    """
    cfg = model_config(stage)
    opt = cfg["optimizer"]
    optimizer = partial(torch.optim.Adam, lr=opt["lr"], betas=tuple(opt["betas"]), weight_decay=opt["weight_decay"])
    common = {
        "optimizer": optimizer,
        "ema": cfg["ema"],
        "channels_last": precision.channels_last,
        "pixel_loss": cfg["pixel_loss"],
    }
    if stage == 1:
        return DiffIRStage1Module(net, **common)
    return DiffIRStage2Module(net, encoder_iter=0, kd=cfg["kd"], stage1_match=[], **common)


def training_stepper(
    stage: int, quick: bool, precision: Precision, device: torch.device, batch: int, size: int, seed: int
) -> Callable[[], float]:
    """A function doing one optimisation step of the stage's training module on a random batch:
    zero_grad + training_loss (under the precision's autocast) + backward + Adam step + EMA update."""
    module = build_module(stage, build_network(stage, quick, seed), precision)
    module = precision.prepare(module, device).train()
    optimizer = module.configure_optimizers()
    optimizer = optimizer["optimizer"] if isinstance(optimizer, dict) else optimizer
    lq, gt, _ = random_images(batch, size, size, device, seed)
    batch_dict = {"lq": lq, "gt": gt}
    decay = float(module.ema_cfg["decay"])

    def step() -> float:
        optimizer.zero_grad(set_to_none=True)
        with precision.autocast(device):
            loss, _ = module.training_loss(batch_dict)
        loss.backward()
        module.on_after_backward()  # as Lightning calls it (stage 2 drops DIRformer gradients in phase 1)
        optimizer.step()
        if module.use_ema:
            ema_update(module.ema_net, module.net, decay)
        return float(loss.detach())

    return step


def summary(seconds: list[float]) -> dict[str, Any]:
    return {"seconds": seconds, "seconds_per_image": statistics.median(seconds)}


def time_inference_cells(
    cells: list[tuple[int, str]],
    quick: bool,
    device: torch.device,
    height: int,
    width: int,
    warmup: int,
    repeats: int,
    seed: int,
) -> dict[tuple[int, str], dict[str, Any]]:
    """Seconds per restored height x width image for every (stage, precision) cell, interleaved."""
    runners = {}
    for stage, name in cells:
        net = build_network(stage, quick, seed)  # the same weights in every cell of a stage
        runners[(stage, name)] = inference_runner(net, stage, PRECISIONS[name], device, height, width, seed)
    fns = {f"s{stage}/{name}": runner[0] for (stage, name), runner in runners.items()}
    seconds = interleaved_seconds(fns, device, max(warmup - 1, 0), repeats)  # restore() ran once already
    return {cell: {**runners[cell][1], **summary(seconds[f"s{cell[0]}/{cell[1]}"])} for cell in cells}


def time_training_cells(
    cells: list[tuple[int, str]],
    quick: bool,
    device: torch.device,
    batch: int,
    size: int,
    warmup: int,
    steps: int,
    seed: int,
) -> dict[tuple[int, str], dict[str, Any]]:
    """Training throughput of every (stage, precision) cell, interleaved; the first step of each cell is the
    first warm-up step and has its FLOPs counted (forward + backward)."""
    steppers, results = {}, {}
    for stage, name in cells:
        torch.manual_seed(seed)  # the stage-2 chain's q_sample noise
        step = training_stepper(stage, quick, PRECISIONS[name], device, batch, size, seed)
        with flop_counter() as counter:
            step()
        steppers[f"s{stage}/{name}"] = step
        results[(stage, name)] = {"batch": batch, "size": size, "gflop_per_step": counter.get_total_flops() / 1e9}
    seconds = interleaved_seconds(steppers, device, max(warmup - 1, 0), steps)
    for (stage, name), result in results.items():
        per_step = seconds[f"s{stage}/{name}"]
        median = statistics.median(per_step)
        result.update({"seconds_per_step": per_step, "median_seconds_per_step": median, "images_per_s": batch / median})
    return results


# ----------------------------------------------------------------------------------------------------------
# Memory probes (fresh processes)
# ----------------------------------------------------------------------------------------------------------


def probe_main(args: argparse.Namespace, settings: dict[str, int], device: torch.device) -> None:
    """Inside a fresh process: one (stage, precision) training or inference cell, then its peak memory."""
    baseline = peak_rss_bytes()  # interpreter + torch + suite imports, before any network exists
    precision = PRECISIONS[args.precision]
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    if args.probe == "train":
        # Two steps: from the second on, the Adam moments coexist with activations and gradients.
        step = training_stepper(
            args.stage, args.quick, precision, device, settings["train_batch"], settings["train_size"], args.seed
        )
        step()
        step()
    else:
        net = build_network(args.stage, args.quick, args.seed)
        size = settings["eval_size"]
        restore, _ = inference_runner(net, args.stage, precision, device, size, size, args.seed)
        restore()
    result = {"peak_rss_bytes": peak_rss_bytes(), "baseline_rss_bytes": baseline, "ru_maxrss_bytes": ru_maxrss_bytes()}
    if device.type == "cuda":
        result["cuda_max_allocated_bytes"] = int(torch.cuda.max_memory_allocated(device))
    emit_probe_result(result)


def probe_argv(args: argparse.Namespace, settings: dict[str, int], stage: int, precision: str, kind: str) -> list[str]:
    argv = [
        "--probe",
        kind,
        "--stage",
        str(stage),
        "--precision",
        precision,
        "--device",
        args.device,
        "--seed",
        str(args.seed),
    ]
    for key in ("train_batch", "train_size", "eval_size"):
        argv += [f"--{key.replace('_', '-')}", str(settings[key])]
    if args.quick:
        argv.append("--quick")
    if args.threads:
        argv += ["--threads", str(args.threads)]
    return argv


def measure_memory(args: argparse.Namespace, settings: dict[str, int]) -> dict[str, dict[str, dict[str, Any]]]:
    """{"s<stage>/<precision>": {"train": ..., "inference": ...}} from one fresh process per cell."""
    cells = [
        (stage, precision, kind)
        for stage in args.memory_stages
        for precision in args.memory_precisions
        for kind in ("train", "inference")
    ]
    argvs = [probe_argv(args, settings, *cell) for cell in cells]
    results = run_probes("benchmarks.diffir_speed", argvs, jobs=args.memory_jobs)
    memory: dict[str, dict[str, dict[str, Any]]] = {}
    for (stage, precision, kind), result in zip(cells, results):
        result["peak_rss_gib"] = result["peak_rss_bytes"] / GIB
        result["above_baseline_gib"] = (result["peak_rss_bytes"] - result["baseline_rss_bytes"]) / GIB
        memory.setdefault(f"s{stage}/{precision}", {})[kind] = result
    return memory


# ----------------------------------------------------------------------------------------------------------
# Report
# ----------------------------------------------------------------------------------------------------------


def speedups(fast: dict[str, Any], slow: dict[str, Any]) -> dict[str, float | None]:
    """How many times faster ``fast`` is than ``slow`` (>1: fast is faster)."""
    return {
        "seconds_per_image": ratio(slow["inference"]["seconds_per_image"], fast["inference"]["seconds_per_image"]),
        "odd_seconds_per_image": ratio(slow["odd_size"]["seconds_per_image"], fast["odd_size"]["seconds_per_image"]),
        "train_images_per_s": ratio(fast["train"]["images_per_s"], slow["train"]["images_per_s"]),
    }


def cost_table(result: dict[str, Any]) -> str:
    """Parameters and FLOPs of both stages."""
    s1, s2 = result["stages"]["1"], result["stages"]["2"]
    size = result["settings"]["eval_size"]
    steps = s2["flops"].get("denoiser_steps", 4)

    def params(stage: dict[str, Any], key: str) -> str:
        value = stage["params"][key]
        return f"{value / 1e6:.3f}" if value else "-"

    def gflops(stage: dict[str, Any], key: str) -> str:
        flops = stage["flops"]
        if key not in flops["parts_gflops"]:
            return "-"
        return f"{flops['parts_gflops'][key]:.2f} ({100 * flops['share'][key]:.1f}%)"

    rows = [
        ["parameters (M)", params(s1, "total"), params(s2, "total")],
        ["  DIRformer", params(s1, "dirformer"), params(s2, "dirformer")],
        ["  CPEN (S1: lq + gt, S2: lq)", params(s1, "cpen"), params(s2, "cpen")],
        ["  IPR denoiser", params(s1, "denoiser"), params(s2, "denoiser")],
        [
            f"GFLOPs per {size}x{size} image (GMACs = half)",
            f"{s1['flops']['gflops']:.2f} ({s1['flops']['gmacs']:.2f} GMACs)",
            f"{s2['flops']['gflops']:.2f} ({s2['flops']['gmacs']:.2f} GMACs)",
        ],
        ["  DIRformer", gflops(s1, "dirformer"), gflops(s2, "dirformer")],
        ["  CPEN", gflops(s1, "cpen"), gflops(s2, "cpen")],
        [f"  IPR denoiser, {steps} steps", "-", gflops(s2, "denoiser")],
        ["  IPR chain (CPEN_S2 + denoiser)", "-", gflops(s2, "ipr_chain")],
    ]
    return markdown_table(["", "stage 1 (DiffIRS1, net(lq, gt))", "stage 2 (DiffIRS2, net(lq))"], rows)


def speed_table(result: dict[str, Any]) -> str:
    """Seconds per image, training throughput and peak memory, fp32 vs bf16 + channels_last, both stages."""
    s = result["settings"]
    memory = result.get("memory") or {}
    cfgs = {stage: result["stages"][str(stage)]["configs"] for stage in STAGES}
    ups = {stage: result["stages"][str(stage)]["bf16_speedup"] for stage in STAGES}

    def row(label: str, values: dict[int, list[float | None]], fmt: str, key: str | None) -> list[str]:
        cells = [label]
        for stage in STAGES:
            cells += [format_cell(v, fmt) for v in values[stage]]
            speed = ups[stage].get(key) if key else None
            cells.append(f"{speed:.2f}x" if speed else "-")
        return cells

    def timed_values(part: str, key: str) -> dict[int, list[float | None]]:
        return {stage: [cfgs[stage][p][part][key] for p in ("fp32", "bf16")] for stage in STAGES}

    def memory_values(kind: str) -> dict[int, list[float | None]]:
        return {
            stage: [memory.get(f"s{stage}/{p}", {}).get(kind, {}).get("peak_rss_gib") for p in ("fp32", "bf16")]
            for stage in STAGES
        }

    size, odd = s["eval_size"], f"{s['odd_height']}x{s['odd_width']}"
    median = f"median of {s['repeats']}"
    rows = [
        row(
            f"s / image {size}x{size} ({median})",
            timed_values("inference", "seconds_per_image"),
            ".3f",
            "seconds_per_image",
        ),
        row(
            f"s / image {odd} -> {odd} ({median})",
            timed_values("odd_size", "seconds_per_image"),
            ".3f",
            "odd_seconds_per_image",
        ),
        row(
            f"training images/s (batch {s['train_batch']}, {s['train_size']}x{s['train_size']}, median of "
            f"{s['train_steps']})",
            timed_values("train", "images_per_s"),
            ".3f",
            "train_images_per_s",
        ),
        row("peak RSS training (GiB)", memory_values("train"), ".2f", None),
        row(f"peak RSS inference {size}x{size} (GiB)", memory_values("inference"), ".2f", None),
    ]
    header = ["", "S1 fp32", "S1 bf16 + CL", "S1 bf16 speedup", "S2 fp32", "S2 bf16 + CL", "S2 bf16 speedup"]
    return markdown_table(header, rows)


def format_report(result: dict[str, Any]) -> str:
    return cost_table(result) + "\n\n" + speed_table(result)


# ----------------------------------------------------------------------------------------------------------
# Entry point
# ----------------------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny network (dim 8, one block per level), 32x32")
    parser.add_argument("--out", type=Path, help=f"JSON output (default {DEFAULT_OUT}; --quick: {QUICK_OUT})")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1 or auto")
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's choice)")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    parser.add_argument(
        "--memory-stages",
        type=int,
        nargs="+",
        choices=STAGES,
        default=list(STAGES),
        help="stages to probe for memory (default both)",
    )
    parser.add_argument(
        "--memory-precisions",
        nargs="+",
        choices=tuple(PRECISIONS),
        default=list(PRECISIONS),
        help="precision configurations to probe for memory (default all)",
    )
    parser.add_argument("--memory-jobs", type=int, help="memory probes run at once (default 1; --quick: 4)")
    parser.add_argument("--seed", type=int, default=0)
    for key, (paper, quick) in SIZES.items():
        flag = f"--{key.replace('_', '-')}"
        parser.add_argument(flag, type=int, help=f"default {paper} (--quick: {quick})")
    # Internal: run one memory-probe cell in this (fresh) process.
    parser.add_argument("--probe", choices=("train", "inference"), help=argparse.SUPPRESS)
    parser.add_argument("--stage", type=int, choices=STAGES, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--precision", choices=tuple(PRECISIONS), default="fp32", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.memory_jobs is None:
        args.memory_jobs = 4 if args.quick else 1
    return args


def resolve_settings(args: argparse.Namespace) -> dict[str, int]:
    settings = {
        key: getattr(args, key) if getattr(args, key) is not None else values[1 if args.quick else 0]
        for key, values in SIZES.items()
    }
    for key, value in settings.items():
        if value < (0 if key == "warmup" else 1):
            raise SystemExit(f"--{key.replace('_', '-')} must be at least {0 if key == 'warmup' else 1}")
    return settings


NOTES = [
    "networks = the defaults of configs/model/diffir_s1.yaml / diffir_s2.yaml (official GoPro options); "
    "random weights (the cost does not depend on them); random images.",
    "flops = torch.utils.flop_counter (convolutions, matrix products, attention; element-wise ops, norms and "
    "softmax are not counted), float32, one image; gmacs = flops / 2; the convolution-backward formula is "
    "replaced by one that counts grouped (depth-wise) convolutions right (torch's counts them as dense). "
    "Stage 1: net(lq, gt) = CPEN_S1 + DIRformer; stage 2: net(lq) = CPEN_S2 + T denoiser steps (the IPR "
    "chain) + DIRformer. Each part is counted on its own; they add up to the whole exactly.",
    "seconds_per_image = median of `repeats` timed restorations (batch 1, eval mode, no_grad) after `warmup` "
    "untimed ones; all four (stage, precision) cells in the same run on identical weights, timed round-robin "
    "(the order rotating every round) so that a change in the machine's load hits every cell alike.",
    "odd_size: a non-multiple-of-8 image is reflect-padded to `padded_to`, restored and cropped back to "
    "`output_shape` (== input_shape).",
    "training = zero_grad + training_loss of the suite's DiffIRStage1Module (L1) / DiffIRStage2Module (joint "
    "phase: L1 + IPR L1 through the 4-step chain, frozen teacher CPEN_S1) + backward + Adam step + EMA update; "
    "images_per_s = batch / median step time (steps interleaved like the inferences); gflop_per_step "
    "(forward + backward) counted on the first (warm-up) step.",
    "peak memory = peak RSS (VmHWM) of a fresh process per cell; baseline_rss_bytes = after imports, before "
    "the network; the training probe runs 2 steps, the inference probe 2 restorations (no_grad). "
    "ru_maxrss_bytes is kept for reference only: on Linux it includes the launching process's peak.",
]


def benchmark(args: argparse.Namespace, settings: dict[str, int], device: torch.device) -> dict[str, Any]:
    s = settings
    result: dict[str, Any] = {
        "benchmark": "diffir_speed",
        "quick": args.quick,
        "machine": machine_info(device),
        "settings": {**settings, "seed": args.seed, "interleaved": True},
        "stages": {},
        "notes": NOTES,
    }
    for stage in STAGES:
        net = build_network(stage, args.quick, args.seed)
        result["stages"][str(stage)] = {
            "network": type(net).__name__,
            "config": net.config,
            "params": param_split(net, stage),
            "flops": inference_flops(net, stage, s["eval_size"], args.seed),
            "configs": {name: {"description": precision.description} for name, precision in PRECISIONS.items()},
        }
    cells = [(stage, name) for stage in STAGES for name in PRECISIONS]
    size, warmup, repeats = s["eval_size"], s["warmup"], s["repeats"]
    timings = {
        "inference": time_inference_cells(cells, args.quick, device, size, size, warmup, repeats, args.seed),
        "odd_size": time_inference_cells(
            cells, args.quick, device, s["odd_height"], s["odd_width"], warmup, repeats, args.seed
        ),
        "train": time_training_cells(
            cells, args.quick, device, s["train_batch"], s["train_size"], warmup, s["train_steps"], args.seed
        ),
    }
    for kind, per_cell in timings.items():
        for (stage, name), value in per_cell.items():
            result["stages"][str(stage)]["configs"][name][kind] = value
    for stage in STAGES:
        configs = result["stages"][str(stage)]["configs"]
        result["stages"][str(stage)]["bf16_speedup"] = speedups(configs["bf16"], configs["fp32"])
    s2_flops = result["stages"]["2"]["flops"]["share"]
    result["dirformer_dominates_stage2"] = s2_flops["dirformer"] > s2_flops["ipr_chain"]
    result["memory"] = None if args.no_memory else measure_memory(args, settings)
    result["machine"]["load_average_at_end"] = load_average()
    return result


def main(argv: list[str] | None = None) -> dict[str, Any]:
    return speed_main(argv, parse_args=parse_args, resolve_settings=resolve_settings, probe_main=probe_main,
                      benchmark=benchmark, format_report=format_report, default_out=DEFAULT_OUT,
                      quick_out=QUICK_OUT)


if __name__ == "__main__":
    main()
