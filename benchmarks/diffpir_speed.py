"""DiffPIR speed and memory: the FFHQ prior (guided-diffusion UNet, ffhq_10m.pt's configuration) at 256x256.

    python -m benchmarks.diffpir_speed [--threads 2] [--nfe 20] [--device cuda]
    python -m benchmarks.diffpir_speed --quick --out /tmp/diffpir.json       (tiny network: smoke test only)

The network is GuidedUNet with PRESETS["ffhq_10m"] (93.6 M parameters) holding random weights: it is built on
the meta device and materialised empty, as diffpir.official.build_prior does, then filled by a cheap seeded
initialisation (the cost of an evaluation does not depend on the values). Reported, batch 1, 256x256:

* parameters, and FLOPs of one evaluation ``net(x_t, t)`` (torch.utils.flop_counter: convolutions, matrix
  products and attention);
* seconds per network evaluation alone (median of --repeats after --warmup untimed ones);
* for each task family (sr_x4, deblur_gaussian with its official 61x61 kernel, inpainting with the box mask),
  one real DiffPIR run through DiffPIRRestorer (the measurement simulated from a random image, the task's
  official settings) at --nfe evaluations: seconds per image, seconds per NFE (model + data step + update),
  and 100 NFEs extrapolated as 100 x seconds per NFE;
* the same runs with a zero-cost dummy network, whose time is the sampler's own work (data step, FFTs,
  re-noising): its share of the real run;
* float32 and bf16 autocast + channels_last, all in the same run;
* peak memory of a DiffPIR run per (precision, task) in a fresh subprocess (peak RSS; on CUDA also
  torch.cuda.max_memory_allocated).
The table is printed (markdown) and the JSON written to --out.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.common import (
    GIB,
    PRECISIONS,
    RESULTS_DIR,
    Precision,
    emit_probe_result,
    format_cell,
    load_average,
    machine_info,
    markdown_table,
    peak_rss_bytes,
    ratio,
    repeat_timed,
    ru_maxrss_bytes,
    run_probes,
    speed_main,
    timed,
)
from core.nn import count_parameters
from diffpir.prior.unet import PRESETS, GuidedUNet, small_config
from diffpir.restorer import DiffPIRRestorer

PRESET = "ffhq_10m"
TASKS = ("sr_x4", "deblur_gaussian", "inpainting")
MASK = "box"  # inpainting: the official 128x128 box at 256x256
EXTRAPOLATE_NFE = 100  # the official NFE count for SR and deblurring

# name: (paper-size value, --quick value)
SIZES = {
    "image_size": (256, 32),
    "kernel_size": (61, 9),  # the official blur kernel; a 61x61 kernel does not fit a 32x32 image
    "nfe": (20, 3),
    "warmup": (1, 1),
    "repeats": (3, 1),
    "probe_nfe": (2, 2),
}
DEFAULT_OUT = RESULTS_DIR / "diffpir_speed.json"
QUICK_OUT = Path(tempfile.gettempdir()) / "diffpir_speed_quick.json"  # never overwrite the real results


# ----------------------------------------------------------------------------------------------------------
# Networks
# ----------------------------------------------------------------------------------------------------------


def network_config(quick: bool) -> dict[str, Any]:
    """GuidedUNet arguments: the released FFHQ prior's, or a tiny network of the same family for --quick."""
    return small_config() if quick else dict(PRESETS[PRESET])


def build_network(config: dict[str, Any], seed: int, device: torch.device | str = "cpu") -> GuidedUNet:
    """A GuidedUNet with seeded random weights, without paying for the module's own initialisation.

    Created on the meta device and materialised empty (as build_prior does), then filled: matrices and kernels
    N(0, 1/fan_in) so activations stay of order one, norm scales 1, biases 0. Same weights in every process.
    """
    with torch.device("meta"):
        net = GuidedUNet(**config)
    net = net.to_empty(device=device)
    gen = torch.Generator(device=device).manual_seed(seed)
    with torch.no_grad():
        for name, param in net.named_parameters():
            if param.ndim > 1:
                param.normal_(0.0, param[0].numel() ** -0.5, generator=gen)
            elif name.endswith("weight"):
                param.fill_(1.0)
            else:
                param.zero_()
    return net.eval()


class ChannelsLastInput(nn.Module):
    """The prior, fed channels_last images (the sampler's state stays NCHW-contiguous between evaluations)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.net(x.contiguous(memory_format=torch.channels_last), t)


class ZeroPrior(nn.Module):
    """A network that costs (almost) nothing: a DiffPIR run with it times the sampler's own work."""

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(x)


def prepare(net: nn.Module, precision: Precision, device: torch.device) -> nn.Module:
    """The network in the precision's layout (weights converted in place, both ways) on ``device``."""
    layout = torch.channels_last if precision.channels_last else torch.contiguous_format
    net = net.to(device=device, memory_format=layout).eval()
    return ChannelsLastInput(net) if precision.channels_last else net


# ----------------------------------------------------------------------------------------------------------
# Measurements
# ----------------------------------------------------------------------------------------------------------


def random_image(size: int, device: torch.device, seed: int) -> torch.Tensor:
    """A random clean image in [0, 1] (1, 3, size, size): the content does not change the cost."""
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(1, 3, size, size, generator=gen).to(device)


def flops_per_eval(net: nn.Module, size: int, seed: int) -> int:
    """FLOPs of one float32 evaluation net(x_t, t) on a size x size image, batch 1."""
    x = random_image(size, torch.device("cpu"), seed) * 2 - 1
    t = torch.full((1,), 500, dtype=torch.long)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        net.cpu()(x, t)
    return int(counter.get_total_flops())


@torch.no_grad()
def time_network(
    net: nn.Module, precision: Precision, device: torch.device, size: int, warmup: int, repeats: int, seed: int
) -> dict[str, Any]:
    """Seconds per evaluation of the network alone (batch 1), every repeat and their median."""
    x = precision.layout(random_image(size, device, seed) * 2 - 1)
    t = torch.full((1,), 500, dtype=torch.long, device=device)

    def evaluate() -> torch.Tensor:
        with precision.autocast(device):
            return net(x, t)

    seconds = repeat_timed(evaluate, device, warmup, repeats)
    return {"seconds": seconds, "seconds_per_eval": statistics.median(seconds)}


def task_run(
    prior: nn.Module,
    task: str,
    precision: Precision,
    device: torch.device,
    size: int,
    kernel_size: int,
    nfe: int,
    seed: int,
) -> tuple[float, int]:
    """(seconds, evaluations made) of one DiffPIR restoration of a simulated measurement of a random image.

    As evaluate.py: one generator seeded for the image draws the measurement noise and the sampler noise; the
    measurement is made outside the timed part, the restoration inside autocast."""
    restorer = DiffPIRRestorer(prior, task, mask=MASK, kernel_size=kernel_size, nfe=nfe)
    batch = {"gt": random_image(size, device, seed), "index": torch.tensor([0]), "name": ["random"]}
    generator = torch.Generator(device=device).manual_seed(seed)
    batch = restorer.measure(batch, generator)
    lq, extras = batch["lq"], restorer.conditions_of(batch, device)

    def restore() -> torch.Tensor:
        with precision.autocast(device):
            return restorer.restore(lq, generator=generator, **extras)

    restored, seconds = timed(restore, device)
    if not torch.isfinite(restored).all():
        raise RuntimeError(f"DiffPIR {task} ({precision.name}) produced non-finite values")
    return seconds, restorer.nfe()


def time_task(
    net: nn.Module,
    task: str,
    precision: Precision,
    device: torch.device,
    size: int,
    kernel_size: int,
    nfe: int,
    seed: int,
) -> dict[str, Any]:
    """One real run and one dummy-network run of the task at ``nfe`` evaluations; per-NFE times, extrapolation."""
    dummy = ZeroPrior()
    task_run(dummy, task, precision, device, size, kernel_size, 2, seed)  # warm-up: FFT plans, allocator
    dummy_seconds, _ = task_run(dummy, task, precision, device, size, kernel_size, nfe, seed)
    seconds, made = task_run(net, task, precision, device, size, kernel_size, nfe, seed)
    per_nfe = seconds / made
    return {
        "nfe": made,
        "seconds_per_image": seconds,
        "seconds_per_nfe": per_nfe,
        "outside_network": {
            "dummy_seconds_per_image": dummy_seconds,
            "dummy_seconds_per_nfe": dummy_seconds / made,
            "share": dummy_seconds / seconds,
        },
        "extrapolated": {
            str(EXTRAPOLATE_NFE): {
                "seconds_per_image": EXTRAPOLATE_NFE * per_nfe,
                "how": f"extrapolated: {EXTRAPOLATE_NFE} x seconds_per_nfe of the measured {made}-NFE run",
            }
        },
    }


# ----------------------------------------------------------------------------------------------------------
# Memory probes (fresh processes)
# ----------------------------------------------------------------------------------------------------------


def probe_main(args: argparse.Namespace, settings: dict[str, int], device: torch.device) -> None:
    """Inside a fresh process: one (precision, task) DiffPIR run of --probe-nfe evaluations, then its peak."""
    baseline = peak_rss_bytes()  # interpreter + torch + suite imports, before any network exists
    precision = PRECISIONS[args.precision]
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    net = prepare(build_network(network_config(args.quick), args.seed, device), precision, device)
    task_run(
        net,
        args.probe,
        precision,
        device,
        settings["image_size"],
        settings["kernel_size"],
        settings["probe_nfe"],
        args.seed,
    )
    result = {"peak_rss_bytes": peak_rss_bytes(), "baseline_rss_bytes": baseline, "ru_maxrss_bytes": ru_maxrss_bytes()}
    if device.type == "cuda":
        result["cuda_max_allocated_bytes"] = int(torch.cuda.max_memory_allocated(device))
    emit_probe_result(result)


def probe_argv(args: argparse.Namespace, settings: dict[str, int], precision: str, task: str) -> list[str]:
    argv = ["--probe", task, "--precision", precision, "--device", args.device, "--seed", str(args.seed)]
    for key in ("image_size", "kernel_size", "probe_nfe"):
        argv += [f"--{key.replace('_', '-')}", str(settings[key])]
    if args.quick:
        argv.append("--quick")
    if args.threads:
        argv += ["--threads", str(args.threads)]
    return argv


def measure_memory(args: argparse.Namespace, settings: dict[str, int]) -> dict[str, dict[str, Any]]:
    """{"<precision>/<task>": peak memory of a DiffPIR run} from one fresh process per cell."""
    cells = [(precision, task) for precision in args.memory_precisions for task in args.memory_tasks]
    argvs = [probe_argv(args, settings, *cell) for cell in cells]
    results = run_probes("benchmarks.diffpir_speed", argvs, jobs=args.memory_jobs)
    memory: dict[str, dict[str, Any]] = {}
    for (precision, task), result in zip(cells, results):
        result["peak_rss_gib"] = result["peak_rss_bytes"] / GIB
        result["above_baseline_gib"] = (result["peak_rss_bytes"] - result["baseline_rss_bytes"]) / GIB
        result["nfe"] = settings["probe_nfe"]
        memory[f"{precision}/{task}"] = result
    return memory


# ----------------------------------------------------------------------------------------------------------
# Report
# ----------------------------------------------------------------------------------------------------------


def speedups(fast: dict[str, Any], slow: dict[str, Any]) -> dict[str, Any]:
    """How many times faster ``fast`` is than ``slow`` (>1: fast is faster)."""
    return {
        "seconds_per_eval": ratio(slow["network"]["seconds_per_eval"], fast["network"]["seconds_per_eval"]),
        "tasks": {
            task: ratio(cell["seconds_per_image"], fast["tasks"][task]["seconds_per_image"])
            for task, cell in slow["tasks"].items()
        },
    }


def format_report(result: dict[str, Any]) -> str:
    configs, memory, ups = result["configs"], result.get("memory") or {}, result["bf16_speedup"]
    s, network = result["settings"], result["network"]
    size, nfe = s["image_size"], s["nfe"]
    header = ["", "fp32", "bf16 + channels_last", "bf16 speedup"]

    def row(label: str, values: list[float | None], fmt: str, speed: float | None = None) -> list[str]:
        return [label, *[format_cell(v, fmt) for v in values], f"{speed:.2f}x" if speed else ""]

    def both(*path: str) -> list[float | None]:
        values = []
        for name in ("fp32", "bf16"):
            node: Any = configs[name]
            for part in path:
                node = node.get(part) if isinstance(node, dict) else None
            values.append(node)
        return values

    rows = [
        row(
            f"s / network evaluation ({size}^2, network alone)",
            both("network", "seconds_per_eval"),
            ".3f",
            ups["seconds_per_eval"],
        )
    ]
    for task in s["tasks"]:
        speed = ups["tasks"][task]
        rows += [
            row(f"{task}: s / NFE (model + data step + update)", both("tasks", task, "seconds_per_nfe"), ".3f", speed),
            row(f"{task}: s / image, {nfe} NFE (measured)", both("tasks", task, "seconds_per_image"), ".2f", speed),
            row(
                f"{task}: s / image, {EXTRAPOLATE_NFE} NFE (extrapolated)",
                both("tasks", task, "extrapolated", str(EXTRAPOLATE_NFE), "seconds_per_image"),
                ".1f",
                speed,
            ),
            row(
                f"{task}: time outside the network (dummy network)",
                [100 * v for v in both("tasks", task, "outside_network", "share")],
                ".2f",
                None,
            ),
        ]
        rows[-1][1:3] = [f"{cell} %" for cell in rows[-1][1:3]]
        if any(f"{name}/{task}" in memory for name in ("fp32", "bf16")):
            values = [memory.get(f"{name}/{task}", {}).get("peak_rss_gib") for name in ("fp32", "bf16")]
            rows.append(row(f"{task}: peak RSS (GiB)", values, ".2f"))
    title = (
        f"GuidedUNet {network['preset']}: {network['params'] / 1e6:.2f} M parameters, "
        f"{network['gflop_per_eval']:.1f} GFLOP per {size}^2 evaluation (batch 1)"
    )
    return title + "\n\n" + markdown_table(header, rows)


# ----------------------------------------------------------------------------------------------------------
# Entry point
# ----------------------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny network (small_config), 32x32, 3 NFEs")
    parser.add_argument("--out", type=Path, help=f"JSON output (default {DEFAULT_OUT}; --quick: {QUICK_OUT})")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1 or auto")
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's choice)")
    parser.add_argument("--tasks", nargs="+", choices=TASKS, default=list(TASKS), help="task families to time")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    parser.add_argument(
        "--memory-precisions",
        nargs="+",
        choices=tuple(PRECISIONS),
        default=list(PRECISIONS),
        help="precision configurations to probe for memory (default all)",
    )
    parser.add_argument("--memory-tasks", nargs="+", choices=TASKS, help="tasks to probe (default: --tasks)")
    parser.add_argument("--memory-jobs", type=int, help="memory probes run at once (default 1; --quick: 2)")
    parser.add_argument("--seed", type=int, default=0)
    for key, (paper, quick) in SIZES.items():
        flag = f"--{key.replace('_', '-')}"
        parser.add_argument(flag, type=int, help=f"default {paper} (--quick: {quick})")
    # Internal: run one memory-probe configuration (a task) in this (fresh) process.
    parser.add_argument("--probe", choices=TASKS, help=argparse.SUPPRESS)
    parser.add_argument("--precision", choices=tuple(PRECISIONS), default="fp32", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.memory_jobs is None:
        args.memory_jobs = 2 if args.quick else 1
    args.memory_tasks = args.memory_tasks or args.tasks
    return args


def resolve_settings(args: argparse.Namespace) -> dict[str, int]:
    settings = {
        key: getattr(args, key) if getattr(args, key) is not None else values[1 if args.quick else 0]
        for key, values in SIZES.items()
    }
    lowest = {"warmup": 0, "nfe": 2, "probe_nfe": 2}
    for key, value in settings.items():
        if value < lowest.get(key, 1):
            raise SystemExit(f"--{key.replace('_', '-')} must be at least {lowest.get(key, 1)}")
    return settings


NOTES = [
    "network: random weights (seeded); the cost of an evaluation does not depend on their values.",
    "seconds_per_image = one timed DiffPIR run (DiffPIRRestorer.restore, the task's official settings, batch 1) "
    "of a measurement simulated from a random image; seconds_per_nfe = seconds_per_image / nfe (model + data "
    "step + update, the run's one-off setup spread over the NFEs).",
    f"extrapolated[{EXTRAPOLATE_NFE}] = {EXTRAPOLATE_NFE} x seconds_per_nfe: not a timed run.",
    "outside_network: the same run with a network returning zeros; share = its time / the real run's time "
    "(data step, FFTs, re-noising, the initial state).",
    "bf16 = bf16 autocast around the whole restoration (as evaluate.py precision=bf16) with channels_last "
    "weights and network inputs; the sampler's state stays float32.",
    "gflop_per_eval: torch.utils.flop_counter on one float32 evaluation (convolutions, matrix products, "
    "attention); 2 FLOPs per multiply-add.",
    "peak memory = peak RSS (VmHWM) of a fresh process per (precision, task) running probe_nfe NFEs; "
    "baseline_rss_bytes = after imports, before the network. ru_maxrss_bytes is kept for reference only: on "
    "Linux it includes the launching process's peak.",
]


def benchmark(args: argparse.Namespace, settings: dict[str, int], device: torch.device) -> dict[str, Any]:
    config = network_config(args.quick)
    net = build_network(config, args.seed)
    size, kernel_size, nfe = settings["image_size"], settings["kernel_size"], settings["nfe"]
    flops = flops_per_eval(net, size, args.seed)
    result: dict[str, Any] = {
        "benchmark": "diffpir_speed",
        "quick": args.quick,
        "machine": machine_info(device),
        "network": {
            "name": "GuidedUNet",
            "preset": "small_config (quick)" if args.quick else PRESET,
            "config": {k: list(v) if isinstance(v, tuple) else v for k, v in config.items()},
            "params": count_parameters(net),
            "weights": "random (seeded), built on the meta device + to_empty",
            "flops_per_eval": flops,
            "gflop_per_eval": flops / 1e9,
            "gmac_per_eval": flops / 2e9,
        },
        "settings": {
            **settings,
            "tasks": list(args.tasks),
            "mask": MASK,
            "extrapolated_nfe": EXTRAPOLATE_NFE,
            "batch": 1,
            "seed": args.seed,
        },
        "configs": {},
        "notes": NOTES,
    }
    for name, precision in PRECISIONS.items():
        prior = prepare(net, precision, device)
        cell: dict[str, Any] = {"description": precision.description}
        cell["network"] = time_network(
            prior, precision, device, size, settings["warmup"], settings["repeats"], args.seed
        )
        cell["tasks"] = {
            task: time_task(prior, task, precision, device, size, kernel_size, nfe, args.seed) for task in args.tasks
        }
        for entry in cell["tasks"].values():
            entry["network_share_estimate"] = (
                entry["nfe"] * cell["network"]["seconds_per_eval"] / entry["seconds_per_image"]
            )
        result["configs"][name] = cell
    result["bf16_speedup"] = speedups(result["configs"]["bf16"], result["configs"]["fp32"])
    result["memory"] = None if args.no_memory else measure_memory(args, settings)
    result["machine"]["load_average_at_end"] = load_average()
    return result


def main(argv: list[str] | None = None) -> dict[str, Any]:
    return speed_main(argv, parse_args=parse_args, resolve_settings=resolve_settings, probe_main=probe_main,
                      benchmark=benchmark, format_report=format_report, default_out=DEFAULT_OUT,
                      quick_out=QUICK_OUT)


if __name__ == "__main__":
    main()
