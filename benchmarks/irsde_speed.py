"""IR-SDE speed and memory: the paper-size ConditionalUNet in float32 and in bf16-mixed + channels_last.

    python -m benchmarks.irsde_speed [--official-repo PATH] [--full-samplers] [--device cuda]
    python -m benchmarks.irsde_speed --quick --out /tmp/speed.json       (tiny network: smoke test only)

Measured in one run, for each precision configuration:
* training throughput: images/s of zero_grad + forward + backward + Adam step on the real matching loss
  (batch 4, 128x128 random pairs), after one warm-up step;
* seconds per network evaluation at 256x256, batch 1, after one warm-up evaluation;
* seconds per restored 256x256 image for each sampler at 100/50/25/10 steps, extrapolated as
  steps x (seconds per evaluation + per-step sampler overhead measured with a zero-cost dummy network), or,
  with --full-samplers, run for real for step counts up to --measure-max-steps (the JSON says which is which);
* peak memory of a training step and of an evaluation, each in a fresh subprocess (peak RSS; on CUDA also
  torch.cuda.max_memory_allocated).
With --official-repo, the official ConditionalUNet (imported from a checkout of Algolzw/image-restoration-sde)
is timed too, in float32, on the same loss and SDE. The table is printed and the JSON written to --out.
"""

from __future__ import annotations

import argparse
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
    load_average,
    machine_info,
    markdown_table,
    mean,
    peak_rss_bytes,
    ratio,
    repeat_timed,
    ru_maxrss_bytes,
    run_probes,
    speed_main,
    timed,
)
from core.nn import count_parameters
from irsde import samplers
from irsde.losses import matching_loss
from irsde.nets.unet import ConditionalUNet
from irsde.sde import IRSDE

# Deraining / deblurring options of the official configs (codes/config/*/options/train/ir-sde.yml).
SDE_OPTIONS = {"max_sigma": 10, "T": 100, "schedule": "cosine", "eps": 0.005}
SAMPLER_NAMES = ("sde", "ode", "posterior")
ADAM = {"lr": 1e-4, "betas": (0.9, 0.99)}

# name: (paper-size value, --quick value)
SIZES = {
    "nf": (64, 8),
    "depth": (4, 2),
    "train_batch": (4, 4),
    "train_size": (128, 64),
    "eval_size": (256, 64),
    "train_steps": (2, 1),
    "evals": (2, 1),
    "warmup": (1, 1),
}
DEFAULT_OUT = RESULTS_DIR / "irsde_speed.json"
QUICK_OUT = Path(tempfile.gettempdir()) / "irsde_speed_quick.json"  # never overwrite the real results


# ----------------------------------------------------------------------------------------------------------
# Networks
# ----------------------------------------------------------------------------------------------------------


def official_unet_class(repo: str | Path) -> type[nn.Module]:
    """The official ConditionalUNet class from a checkout (imported as scripts/check_irsde_parity.py does)."""
    from scripts.check_irsde_parity import import_official_modules

    return import_official_modules(Path(repo), "deraining").ConditionalUNet


def build_network(network: str, nf: int, depth: int, official_repo: str | None, seed: int) -> nn.Module:
    torch.manual_seed(seed)  # same initial weights in every process, so probes and timings see one network
    if network == "ours":
        return ConditionalUNet(3, 3, nf, depth)
    if official_repo is None:
        raise SystemExit("the official network needs --official-repo PATH")
    return official_unet_class(official_repo)(3, 3, nf, depth=depth)


# ----------------------------------------------------------------------------------------------------------
# Measurements
# ----------------------------------------------------------------------------------------------------------


def random_pair(batch: int, size: int, device: torch.device, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A (clean, degraded) pair of random images in [0, 1]: the content does not change the network's cost."""
    gen = torch.Generator().manual_seed(seed)
    gt = torch.rand(batch, 3, size, size, generator=gen)
    lq = (gt + 0.1 * torch.randn(gt.shape, generator=gen)).clamp(0, 1)
    return gt.to(device), lq.to(device)


def time_training(net: nn.Module, sde: IRSDE, precision: Precision, device: torch.device, batch: int,
                  size: int, warmup: int, steps: int, seed: int, count_flops: bool = False) -> dict[str, Any]:
    """Seconds per optimisation step (forward + backward + Adam) on the matching loss, and images/s."""
    net = precision.prepare(net, device).train()
    optimizer = torch.optim.Adam(net.parameters(), **ADAM)
    gt, lq = (precision.layout(x) for x in random_pair(batch, size, device, seed))
    gen = torch.Generator(device=device).manual_seed(seed)

    def step() -> float:
        optimizer.zero_grad(set_to_none=True)
        with precision.autocast(device):
            loss = matching_loss(sde, net, gt, lq, generator=gen)
        loss.backward()
        optimizer.step()
        return float(loss.detach())

    result: dict[str, Any] = {}
    if count_flops:  # the first step doubles as the warm-up
        with FlopCounterMode(display=False) as counter:
            step()
        result["gflop_per_step"] = counter.get_total_flops() / 1e9
        warmup -= 1
    seconds = repeat_timed(step, device, max(warmup, 0), steps)
    result.update({"seconds_per_step": seconds, "images_per_s": batch / mean(seconds)})
    return result


@torch.no_grad()
def time_evaluation(net: nn.Module, sde: IRSDE, precision: Precision, device: torch.device, size: int,
                    warmup: int, evals: int, seed: int, count_flops: bool = False) -> dict[str, Any]:
    """Seconds per network evaluation (batch 1) at size x size."""
    net = precision.prepare(net, device).eval()
    _, mu = (precision.layout(x) for x in random_pair(1, size, device, seed))
    x_t = mu + sde.max_sigma * torch.randn_like(mu)
    t = torch.full((1,), sde.T // 2, dtype=torch.long, device=device)

    def evaluate() -> torch.Tensor:
        with precision.autocast(device):
            return net(x_t, mu, t)

    result: dict[str, Any] = {}
    if count_flops:
        with FlopCounterMode(display=False) as counter:
            evaluate()
        result["gflop_per_eval"] = counter.get_total_flops() / 1e9
        warmup -= 1
    seconds = repeat_timed(evaluate, device, max(warmup, 0), evals)
    result.update({"seconds": seconds, "seconds_per_eval": mean(seconds)})
    return result


def zero_noise(x_t: torch.Tensor, mu: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """A network that costs (almost) nothing: isolates the sampler's own arithmetic per step."""
    return torch.zeros_like(x_t)


@torch.no_grad()
def run_sampler(name: str, model: Any, sde: IRSDE, precision: Precision, device: torch.device, size: int,
                steps: int, seed: int) -> float:
    """Seconds to restore one size x size image with sampler ``name`` in ``steps`` steps."""
    _, mu = random_pair(1, size, device, seed)
    mu = precision.layout(mu)
    gen = torch.Generator(device=device).manual_seed(seed)

    def restore() -> torch.Tensor:
        with precision.autocast(device):
            return samplers.restore(name, sde, model, mu, steps=steps, generator=gen)

    return timed(restore, device)[1]


def sampler_overhead(sde: IRSDE, precision: Precision, device: torch.device, size: int, steps: int,
                     seed: int) -> dict[str, float]:
    """Seconds per step that each sampler spends outside the network (dummy network, after a warm-up run)."""
    overhead = {}
    for name in SAMPLER_NAMES:
        run_sampler(name, zero_noise, sde, precision, device, size, 2, seed)
        overhead[name] = run_sampler(name, zero_noise, sde, precision, device, size, steps, seed) / steps
    return overhead


def sampler_seconds(net: nn.Module, sde: IRSDE, precision: Precision, device: torch.device, size: int,
                    step_counts: list[int], per_eval: float, overhead: dict[str, float], measure_up_to: int,
                    seed: int) -> dict[str, dict[str, dict[str, Any]]]:
    """Seconds per restored image for every sampler and step count: measured or extrapolated (both when
    measured, so the extrapolation can be checked)."""
    net = precision.prepare(net, device).eval()
    table: dict[str, dict[str, dict[str, Any]]] = {}
    for name in SAMPLER_NAMES:
        table[name] = {}
        for steps in step_counts:
            estimate = steps * (per_eval + overhead[name])
            entry: dict[str, Any] = {"seconds_per_image": estimate, "how": "extrapolated",
                                     "extrapolated_seconds": estimate}
            if steps <= measure_up_to:
                entry["seconds_per_image"] = run_sampler(name, net, sde, precision, device, size, steps, seed)
                entry["how"] = "measured"
            table[name][str(steps)] = entry
    return table


# ----------------------------------------------------------------------------------------------------------
# Memory probes (fresh processes)
# ----------------------------------------------------------------------------------------------------------


def probe_main(args: argparse.Namespace, settings: dict[str, int], device: torch.device) -> None:
    """Inside a fresh process: one configuration's training steps or evaluation, then its peak memory."""
    baseline = peak_rss_bytes()  # interpreter + torch + suite imports, before any network exists
    precision = PRECISIONS[args.precision]
    sde = IRSDE(**SDE_OPTIONS)
    net = build_network(args.network, settings["nf"], settings["depth"], args.official_repo, args.seed)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    if args.probe == "train":
        # Two steps: from the second on, the Adam moments coexist with activations and gradients.
        time_training(net, sde, precision, device, settings["train_batch"], settings["train_size"], 0, 2,
                      args.seed)
    else:
        time_evaluation(net, sde, precision, device, settings["eval_size"], 0, 1, args.seed)
    result = {"peak_rss_bytes": peak_rss_bytes(), "baseline_rss_bytes": baseline,
              "ru_maxrss_bytes": ru_maxrss_bytes()}
    if device.type == "cuda":
        result["cuda_max_allocated_bytes"] = int(torch.cuda.max_memory_allocated(device))
    emit_probe_result(result)


def probe_argv(args: argparse.Namespace, settings: dict[str, int], network: str, precision: str,
               kind: str) -> list[str]:
    argv = ["--probe", kind, "--network", network, "--precision", precision, "--device", args.device,
            "--seed", str(args.seed)]
    for key in ("nf", "depth", "train_batch", "train_size", "eval_size"):
        argv += [f"--{key.replace('_', '-')}", str(settings[key])]
    if args.official_repo:
        argv += ["--official-repo", str(args.official_repo)]
    if args.threads:
        argv += ["--threads", str(args.threads)]
    return argv


def measure_memory(args: argparse.Namespace, settings: dict[str, int],
                   configs: list[tuple[str, str]]) -> dict[str, dict[str, dict[str, Any]]]:
    """{network/precision label: {"train": ..., "inference": ...}} from one fresh process per cell."""
    cells = [(network, precision, kind) for network, precision in configs for kind in ("train", "inference")]
    argvs = [probe_argv(args, settings, *cell) for cell in cells]
    results = run_probes("benchmarks.irsde_speed", argvs, jobs=args.memory_jobs)
    memory: dict[str, dict[str, dict[str, Any]]] = {}
    for (network, precision, kind), result in zip(cells, results):
        result["peak_rss_gib"] = result["peak_rss_bytes"] / GIB
        result["above_baseline_gib"] = (result["peak_rss_bytes"] - result["baseline_rss_bytes"]) / GIB
        memory.setdefault(f"{network}/{precision}", {})[kind] = result
    return memory


# ----------------------------------------------------------------------------------------------------------
# Report
# ----------------------------------------------------------------------------------------------------------


def speedups(fast: dict[str, Any], slow: dict[str, Any]) -> dict[str, Any]:
    """How many times faster ``fast`` is than ``slow`` on every timed quantity (>1: fast is faster)."""
    out: dict[str, Any] = {
        "train_images_per_s": ratio(fast["train"]["images_per_s"], slow["train"]["images_per_s"]),
        "seconds_per_eval": ratio(slow["eval"]["seconds_per_eval"], fast["eval"]["seconds_per_eval"]),
    }
    if "samplers" in fast and "samplers" in slow:
        out["samplers"] = {
            name: {steps: ratio(slow["samplers"][name][steps]["seconds_per_image"], cell["seconds_per_image"])
                   for steps, cell in cells.items()}
            for name, cells in fast["samplers"].items()
        }
    return out


def format_report(result: dict[str, Any]) -> str:
    configs, memory = result["configs"], result.get("memory") or {}
    official = result.get("official")
    s = result["settings"]
    header = ["", "fp32", "bf16 + channels_last", "bf16 speedup"] + (["official fp32"] if official else [])

    def row(label: str, values: list[float | None], fmt: str, speed: float | None) -> list[str]:
        cells = [format(v, fmt) if v is not None else "-" for v in values[:2]]
        cells.append(f"{speed:.2f}x" if speed else "-")
        if official:
            cells.append(format(values[2], fmt) if values[2] is not None else "-")
        return [label, *cells]

    def cfg_value(key: str, *path: str) -> list[float | None]:
        sources = [configs["fp32"], configs["bf16"]] + ([official] if official else [])
        values = []
        for source in sources:
            node: Any = source.get(key) if source else None
            for part in path:
                node = node.get(part) if isinstance(node, dict) else None
            values.append(node)
        return values + [None] * (3 - len(values))

    ups = result["bf16_speedup"]
    rows = [
        row(f"training images/s (batch {s['train_batch']}, {s['train_size']}^2)",
            cfg_value("train", "images_per_s"), ".3f", ups["train_images_per_s"]),
        row(f"s / network evaluation ({s['eval_size']}^2)", cfg_value("eval", "seconds_per_eval"), ".3f",
            ups["seconds_per_eval"]),
    ]
    for kind, label in (("train", "training"), ("inference", "inference")):
        values = [memory.get(f"{net}/{prec}", {}).get(kind, {}).get("peak_rss_gib")
                  for net, prec in (("ours", "fp32"), ("ours", "bf16"), ("official", "fp32"))]
        rows.append(row(f"peak RSS {label} (GiB)", values, ".2f", None))
    for name in SAMPLER_NAMES:
        for steps, cell in configs["fp32"]["samplers"][name].items():
            bf16_cell = configs["bf16"]["samplers"][name][steps]
            tag = "measured" if cell["how"] == "measured" else "extrap."
            rows.append(row(f"s / image {name} {steps} steps ({tag})",
                            [cell["seconds_per_image"], bf16_cell["seconds_per_image"], None], ".1f",
                            ups["samplers"][name][steps]))
    return markdown_table(header, rows)


# ----------------------------------------------------------------------------------------------------------
# Entry point
# ----------------------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny network (nf 8, depth 2), 64x64, 1 step")
    parser.add_argument("--out", type=Path, help=f"JSON output (default {DEFAULT_OUT}; --quick: {QUICK_OUT})")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1 or auto")
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's choice)")
    parser.add_argument("--official-repo", help="checkout of Algolzw/image-restoration-sde to time it too")
    parser.add_argument("--steps", type=int, nargs="+", default=[100, 50, 25, 10], help="sampler step counts")
    parser.add_argument("--full-samplers", action="store_true",
                        help="run the samplers for real for step counts <= --measure-max-steps")
    parser.add_argument("--measure-max-steps", type=int, default=10)
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    parser.add_argument("--memory-precisions", nargs="+", choices=tuple(PRECISIONS), default=list(PRECISIONS),
                        help="precision configurations of our network to probe for memory (default all)")
    parser.add_argument("--memory-jobs", type=int, help="memory probes run at once (default 1; --quick: 4)")
    parser.add_argument("--seed", type=int, default=0)
    for key, (paper, quick) in SIZES.items():
        flag = f"--{key.replace('_', '-')}"
        parser.add_argument(flag, type=int, help=f"default {paper} (--quick: {quick})")
    # Internal: run one memory-probe configuration in this (fresh) process.
    parser.add_argument("--probe", choices=("train", "inference"), help=argparse.SUPPRESS)
    parser.add_argument("--network", choices=("ours", "official"), default="ours", help=argparse.SUPPRESS)
    parser.add_argument("--precision", choices=tuple(PRECISIONS), default="fp32", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.memory_jobs is None:
        args.memory_jobs = 4 if args.quick else 1
    return args


def resolve_settings(args: argparse.Namespace) -> dict[str, int]:
    settings = {key: getattr(args, key) if getattr(args, key) is not None else values[1 if args.quick else 0]
                for key, values in SIZES.items()}
    for key, value in settings.items():
        if value < (0 if key == "warmup" else 1):
            raise SystemExit(f"--{key.replace('_', '-')} must be at least {0 if key == 'warmup' else 1}")
    if min(args.steps) < 1:
        raise SystemExit("--steps must be positive")
    return settings


NOTES = [
    "seconds_per_image 'extrapolated' = steps * (seconds_per_eval + sampler_overhead_per_step[sampler]); "
    "'measured' = one timed run of the sampler with the network (extrapolated_seconds kept beside it).",
    "training = zero_grad + forward + backward + Adam step on the matching loss (random image pairs).",
    "peak memory = peak RSS (VmHWM) of a fresh process per cell; baseline_rss_bytes = after imports, "
    "before the network; the training probe runs 2 steps, the inference probe 1 evaluation (no_grad). "
    "ru_maxrss_bytes is kept for reference only: on Linux it includes the launching process's peak.",
    "gflop counts come from torch.utils.flop_counter during the warm-up call (conv/matmul only).",
]


def time_network(net: nn.Module, sde: IRSDE, precision: Precision, device: torch.device,
                 settings: dict[str, int], seed: int, count_flops: bool) -> dict[str, Any]:
    """Training throughput and seconds per evaluation of one network in one precision configuration."""
    s = settings
    return {
        "train": time_training(net, sde, precision, device, s["train_batch"], s["train_size"], s["warmup"],
                               s["train_steps"], seed, count_flops),
        "eval": time_evaluation(net, sde, precision, device, s["eval_size"], s["warmup"], s["evals"], seed,
                                count_flops),
    }


def benchmark(args: argparse.Namespace, settings: dict[str, int], device: torch.device) -> dict[str, Any]:
    sde = IRSDE(**SDE_OPTIONS)
    net = build_network("ours", settings["nf"], settings["depth"], None, args.seed)
    step_counts = sorted(set(args.steps), reverse=True)
    measure_up_to = args.measure_max_steps if args.full_samplers else 0
    size = settings["eval_size"]
    result: dict[str, Any] = {
        "benchmark": "irsde_speed",
        "quick": args.quick,
        "machine": machine_info(device),
        "network": {"name": "ConditionalUNet", "nf": settings["nf"], "depth": settings["depth"],
                    "params": count_parameters(net)},
        "settings": {**settings, "sampler_steps": step_counts, "sde": SDE_OPTIONS, "adam": ADAM,
                     "full_samplers": args.full_samplers, "measured_up_to_steps": measure_up_to,
                     "seed": args.seed},
        "configs": {},
        "notes": NOTES,
    }
    for name, precision in PRECISIONS.items():
        timings = time_network(net, sde, precision, device, settings, args.seed, count_flops=True)
        overhead = sampler_overhead(sde, precision, device, size, max(step_counts), args.seed)
        per_eval = timings["eval"]["seconds_per_eval"]
        result["configs"][name] = {
            "description": precision.description,
            **timings,
            "sampler_overhead_per_step": overhead,
            "samplers": sampler_seconds(net, sde, precision, device, size, step_counts, per_eval, overhead,
                                        measure_up_to, args.seed),
        }
    result["bf16_speedup"] = speedups(result["configs"]["bf16"], result["configs"]["fp32"])

    result["official"] = None
    if args.official_repo:
        official_net = build_network("official", settings["nf"], settings["depth"], args.official_repo,
                                     args.seed)
        result["official"] = {
            "description": "official ConditionalUNet, float32; trained through this suite's SDE and loss",
            "params": count_parameters(official_net),
            **time_network(official_net, sde, PRECISIONS["fp32"], device, settings, args.seed, False),
        }
        result["ours_fp32_vs_official_fp32_speedup"] = speedups(result["configs"]["fp32"], result["official"])

    result["memory"] = None
    if not args.no_memory:
        configs = [("ours", name) for name in PRECISIONS if name in args.memory_precisions]
        if args.official_repo:
            configs.append(("official", "fp32"))
        result["memory"] = measure_memory(args, settings, configs)
    result["machine"]["load_average_at_end"] = load_average()
    return result


def main(argv: list[str] | None = None) -> dict[str, Any]:
    return speed_main(argv, parse_args=parse_args, resolve_settings=resolve_settings, probe_main=probe_main,
                      benchmark=benchmark, format_report=format_report, default_out=DEFAULT_OUT,
                      quick_out=QUICK_OUT)


if __name__ == "__main__":
    main()
