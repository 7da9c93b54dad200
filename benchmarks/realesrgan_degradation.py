"""Cost of Real-ESRGAN's degradation model (data.realesrgan) per training batch, next to a DiffIR training step at
the official DiffIR-RealSR size.

    python -m benchmarks.realesrgan_degradation --threads 2     (-> benchmarks/results/realesrgan_degradation_cpu.json)
    python -m benchmarks.realesrgan_degradation --device cuda   (-> ..._cuda.json)
    python -m benchmarks.realesrgan_degradation --quick --out /tmp/x.json                (smoke test: tiny sizes)

Cells, timed round-robin (the order rotating every round; the training step too) so that load changes on a
shared machine hit them alike, median of --repeats after --warmup untimed calls:

* `degrade` at x4, x2 and x1 on a batch of --batch (16) GT crops of --hr-size (256), with the official options
  (DiffIR-RealSR; fresh per-sample generators at every call, so every call draws new degradations), and x4 on the
  official dataset's 400x400 crops (cut to the 256 patch after degrading, as the official feed_data does);
* the drawing of the per-sample parameters alone (kernels and choices, on the CPU whatever the device);
* one training step of DiffIR stage 1 at the DiffIR-RealSR x4 size (DiffIR-RealSR/options/train_DiffIRS1_x4.yml
  network = configs/experiment/diffir_s1_div2k_sr.yaml: dim 64, blocks [13, 1, 1, 1], 13 refinement blocks,
  FFN 2.2, BiasFree, 9 CPEN blocks; LR 64 -> HR 256): the suite's DiffIRStage1Module L1 loss + backward + Adam +
  EMA, under --step-precision (bf16 autocast + channels_last by default: the faster setting, so the share of the
  degradation is not flattered). On the CPU the step runs at --step-batch 2 (a batch of 16 at this size needs
  more memory than this machine has); the comparison is per image, both costs being linear in the batch.
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
from omegaconf import OmegaConf

from benchmarks.common import (
    PRECISIONS,
    REPO_ROOT,
    RESULTS_DIR,
    load_average,
    machine_info,
    markdown_table,
    pick_device,
    torch_threads,
    write_json,
)
from benchmarks.diffir_speed import QUICK_NET, build_module, interleaved_seconds, model_config
from core.ema import ema_update
from data.realesrgan import OFFICIAL, DegradationOptions, degrade, sample_generators
from data.realesrgan.params import draw_sample_params
from diffir.networks import DiffIRS1

REALSR_EXPERIMENT = REPO_ROOT / "configs" / "experiment" / "diffir_s1_div2k_sr.yaml"
# name: (default, --quick)
SIZES = {"batch": (16, 2), "hr_size": (256, 64), "official_crop": (400, 96), "step_batch": (2, 2),
         "warmup": (1, 1), "repeats": (5, 1)}


def realsr_network(quick: bool, seed: int) -> DiffIRS1:
    """DiffIR stage 1 with the DiffIR-RealSR x4 network options (or the --quick tiny one, still x4)."""
    cfg = {k: v for k, v in model_config(1)["net"].items() if k != "_target_"}
    cfg.update(OmegaConf.to_container(OmegaConf.load(REALSR_EXPERIMENT))["model"]["net"])
    if quick:
        cfg.update(QUICK_NET)
    torch.manual_seed(seed)
    return DiffIRS1(**cfg)


def training_step(quick: bool, precision_name: str, device: torch.device, batch: int, hr: int, seed: int):
    precision = PRECISIONS[precision_name]
    net = realsr_network(quick, seed)
    module = precision.prepare(build_module(1, net, precision), device).train()
    optimizer = module.configure_optimizers()
    optimizer = optimizer["optimizer"] if isinstance(optimizer, dict) else optimizer
    g = torch.Generator().manual_seed(seed)
    gt = torch.rand(batch, 3, hr, hr, generator=g).to(device)
    lq = torch.rand(batch, 3, hr // 4, hr // 4, generator=g).to(device)
    decay = float(module.ema_cfg["decay"])

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with precision.autocast(device):
            loss, _ = module.training_loss({"lq": lq, "gt": gt})
        loss.backward()
        optimizer.step()
        ema_update(module.ema_net, module.net, decay)

    return step, {"parameters": sum(p.numel() for p in net.parameters()), "network": net.config}


def options_for(patch: int) -> DegradationOptions:
    """The official options, with the --quick patch in place of the official 256."""
    return OFFICIAL if patch == OFFICIAL.gt_size else DegradationOptions.from_config(gt_size=patch)


def degradation_call(device: torch.device, batch: int, hr: int, patch: int, scale: int, seed: int):
    """degrade() of a fixed batch of hr x hr crops (cut to the patch); every call takes the next epoch's
    generators (new degradations)."""
    g = torch.Generator().manual_seed(seed)
    gt = torch.rand(batch, 3, hr, hr, generator=g).to(device)
    options = options_for(patch)
    calls = [0]

    def run() -> torch.Tensor:
        calls[0] += 1
        return degrade(gt, sample_generators(seed, calls[0], range(batch)), scale, options).lq

    return run, {"lq_shape": list(run().shape), "gt_crop": options.gt_size}


def parameter_draws(batch: int, hr: int, seed: int):
    calls = [0]

    def run() -> None:
        calls[0] += 1
        for g in sample_generators(seed, calls[0], range(batch)):
            draw_sample_params(g, options_for(hr), (hr, hr), 4)  # an hr crop cut to an hr patch

    return run


def benchmark(args: argparse.Namespace, s: dict[str, int], device: torch.device) -> dict[str, Any]:
    result: dict[str, Any] = {"benchmark": "realesrgan_degradation", "quick": args.quick,
                              "machine": machine_info(device), "settings": {**s, "seed": args.seed,
                                                                            "step_precision": args.step_precision}}
    cells, shapes = {}, {}
    for scale in (4, 2, 1):
        cells[f"degrade_x{scale}"], shapes[f"degrade_x{scale}"] = degradation_call(
            device, s["batch"], s["hr_size"], s["hr_size"], scale, args.seed)
    cells["degrade_x4_official_crop"], shapes["degrade_x4_official_crop"] = degradation_call(
        device, s["batch"], s["official_crop"], s["hr_size"], 4, args.seed)
    cells["draw_parameters"] = parameter_draws(s["batch"], s["hr_size"], args.seed)
    cells["step"], network = training_step(args.quick, args.step_precision, device, s["step_batch"], s["hr_size"],
                                           args.seed)
    seconds = interleaved_seconds(cells, device, s["warmup"], s["repeats"])  # the step among the others
    step_seconds = seconds.pop("step")
    step_per_image = statistics.median(step_seconds) / s["step_batch"]
    result["training_step"] = {**network, "batch": s["step_batch"], "hr_size": s["hr_size"],
                               "seconds": step_seconds, "seconds_per_image": step_per_image,
                               f"seconds_per_batch_of_{s['batch']}": step_per_image * s["batch"]}
    result["degradation"] = {}
    for name, values in seconds.items():
        per_batch = statistics.median(values)
        result["degradation"][name] = {**shapes.get(name, {}), "seconds": values, "seconds_per_batch": per_batch,
                                       "seconds_per_image": per_batch / s["batch"],
                                       "fraction_of_step": per_batch / s["batch"] / step_per_image}
    result["goal"] = "degradation under 10% of a training step"
    result["goal_met"] = all(v["fraction_of_step"] < 0.1 for v in result["degradation"].values())
    result["machine"]["load_average_at_end"] = load_average()
    return result


def format_report(result: dict[str, Any]) -> str:
    s, step = result["settings"], result["training_step"]
    rows = [[name, f"{v['seconds_per_batch']:.3f}", f"{1000 * v['seconds_per_image']:.1f}",
             f"{100 * v['fraction_of_step']:.2f}%"] for name, v in result["degradation"].items()]
    rows.append([f"DiffIR-RealSR S1 x4 training step ({s['step_precision']}, batch {step['batch']})",
                 f"{step['seconds_per_image'] * s['batch']:.3f} (x{s['batch']} images)",
                 f"{1000 * step['seconds_per_image']:.1f}", "100%"])
    header = [f"cell (batch {s['batch']}, GT {s['hr_size']}^2)", "s / batch", "ms / image", "share of a step"]
    return markdown_table(header, rows)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes and network: a smoke test")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's choice)")
    parser.add_argument("--step-precision", choices=tuple(PRECISIONS), default="bf16")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, help="JSON output (default benchmarks/results/"
                                                 "realesrgan_degradation_<device>.json; --quick: a temp file)")
    for key, (default, quick) in SIZES.items():
        parser.add_argument(f"--{key.replace('_', '-')}", type=int, help=f"default {default} (--quick: {quick})")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    settings = {k: getattr(args, k) if getattr(args, k) is not None else v[int(args.quick)] for k, v in SIZES.items()}
    device = pick_device(args.device)
    with torch_threads(args.threads):
        result = benchmark(args, settings, device)
    default = RESULTS_DIR / f"realesrgan_degradation_{device.type}.json"
    out = args.out or (Path(tempfile.gettempdir()) / "realesrgan_degradation_quick.json" if args.quick else default)
    write_json(out, result)
    print(format_report(result))
    print(f"\nwrote {out}")
    return result


if __name__ == "__main__":
    main()
