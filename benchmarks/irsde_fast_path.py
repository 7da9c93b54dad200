"""IR-SDE end to end: the official configuration against the fast path, side by side in one run.

    python -m benchmarks.irsde_fast_path [--threads 2] [--device cuda] [--fast mr_ode:2@10 ...]
    python -m benchmarks.irsde_fast_path --quick          (tiny network, 32x32: a smoke run)

Both columns restore the same random 256x256 image through the same code path as restore.py
(`prepare_for_inference` + `build_restorer` + the restorer), on the paper-size ConditionalUNet (nf 64, depth 4,
random weights: speed does not depend on them):
* official: the 100-step posterior sampler in float32;
* fast: a few-step solver (`sampler:order@steps`, default mr_ode:2@10) with bf16 autocast + channels_last.
Every configuration is timed after a warm-up (itself, or one step of it when longer than 10 steps; with
--compile the warm-up pays the compilation). The JSON holds the seconds per image and the speed-up of each
fast configuration.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import torch

from benchmarks.common import (
    RESULTS_DIR,
    load_average,
    machine_info,
    markdown_table,
    pick_device,
    timed,
    torch_threads,
    write_json,
)
from core.restorer import build_restorer, prepare_for_inference
from irsde.module import IRSDEModule
from irsde.nets.unet import ConditionalUNet

DEFAULT_OUT = RESULTS_DIR / "irsde_fast_path.json"
QUICK_OUT = RESULTS_DIR / "irsde_fast_path_quick.json"
OFFICIAL = {"label": "official: posterior, 100 steps, float32", "sampler": "posterior", "steps": 100,
            "precision": "32"}


def parse_fast(spec: str) -> dict[str, Any]:
    """'mr_ode:2@10' -> sampler mr_ode, order 2, 10 steps, bf16."""
    name, _, steps = spec.partition("@")
    sampler, _, order = name.partition(":")
    if not steps:
        raise argparse.ArgumentTypeError(f"--fast {spec}: write sampler[:order]@steps, e.g. mr_ode:2@10")
    options = {"label": f"fast: {name}, {steps} steps, bf16 + channels_last", "sampler": sampler,
               "steps": int(steps), "precision": "bf16"}
    if order:
        options["order"] = int(order)
    return options


def build_module(nf: int, depth: int, seed: int) -> IRSDEModule:
    """The official deraining SDE (max_sigma 10, T 100) around a random-weight ConditionalUNet."""
    torch.manual_seed(seed)
    return IRSDEModule(net=ConditionalUNet(nf=nf, depth=depth), sde={"max_sigma": 10, "T": 100})


def seconds_per_image(config: dict[str, Any], nf: int, depth: int, size: int, device: torch.device,
                      seed: int, compile: bool) -> dict[str, Any]:
    precision = config["precision"]
    module = prepare_for_inference(build_module(nf, depth, seed), device, precision)
    options = {k: config[k] for k in ("sampler", "steps", "order") if k in config}
    restorer = build_restorer(module, options, compile=compile and precision == "bf16")
    lq = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(seed)).to(device)

    def restore() -> torch.Tensor:
        generator = torch.Generator(device=device).manual_seed(seed)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
            return restorer.restore(lq, generator=generator)

    # warm-up (allocations, kernel selection, torch.compile's compilation): the configuration itself when short,
    # else the same network and sampler for one step (the 100-step float32 run would double the benchmark)
    if restorer.nfe() > 10 and not compile:
        short = build_restorer(module, {**options, "steps": 1})
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
            _, warmup = timed(lambda: short.restore(lq, generator=torch.Generator(device=device).manual_seed(seed)),
                              device)
    else:
        _, warmup = timed(restore, device)
    _, seconds = timed(restore, device)
    return {**config, "nfe": restorer.nfe(), "seconds_per_image": seconds, "warmup_seconds": warmup}


def benchmark(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    nf, depth, size = (8, 2, 32) if args.quick else (args.nf, args.depth, args.size)
    official = dict(OFFICIAL, steps=4 if args.quick else OFFICIAL["steps"])
    fast = [parse_fast(spec) for spec in args.fast]
    rows = [seconds_per_image(c, nf, depth, size, device, args.seed, args.compile) for c in [official, *fast]]
    base = rows[0]["seconds_per_image"]
    for row in rows:
        row["speedup_vs_official"] = base / row["seconds_per_image"]
    return {"benchmark": "irsde_fast_path", "network": {"nf": nf, "depth": depth}, "size": size,
            "compile": args.compile, "device": str(device), "machine": machine_info(device),
            "load_average_after": load_average(), "rows": rows}


def format_report(result: dict[str, Any]) -> str:
    rows = [[r["label"], str(r["nfe"]), f"{r['seconds_per_image']:.1f}", f"{r['speedup_vs_official']:.1f}x"]
            for r in result["rows"]]
    return markdown_table(["configuration", "NFEs", "s / image", "vs official"], rows)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny network (nf 8, depth 2), 32x32, 4 steps")
    parser.add_argument("--fast", nargs="+", default=["mr_ode:2@10"], help="sampler[:order]@steps, bf16")
    parser.add_argument("--nf", type=int, default=64)
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--compile", action="store_true", help="torch.compile the fast configurations")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's choice)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, help=f"JSON output (default {DEFAULT_OUT})")
    args = parser.parse_args(argv)
    device = pick_device(args.device)
    with torch_threads(args.threads):
        result = benchmark(args, device)
    out = args.out or (QUICK_OUT if args.quick else DEFAULT_OUT)
    write_json(out, result)
    print(format_report(result))
    print(f"\nwrote {out}")
    return result


if __name__ == "__main__":
    main()
