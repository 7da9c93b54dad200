"""IR-SDE restoration quality against the number of sampler steps, on the built-in demo test images.

    python -m benchmarks.irsde_quality [--ckpt FILE] [--samplers posterior mr_ode:3 ...] [--steps 20 10 5]
    python -m benchmarks.irsde_quality --quick --ckpt FILE --out /tmp/q.json      (2 images, 5 and 2 steps)

For a trained suite checkpoint, every sampler restores the demo test images of the checkpoint's task
(``data.task`` of its stored config) at each of its step counts, and the PSNR/SSIM of the restored and of the
degraded images are computed with the suite's paper-convention metrics. A sampler is a name of
irsde.samplers.SAMPLERS, and for the few-step MR solvers (irsde/mr_sampler.py) optionally ``name:order``
(mr_ode:1..3, mr_sde:1..2; their grid is --grid, default the solver's, logsnr).

Defaults, per kind of checkpoint (``--steps`` replaces every step list):
* IR-SDE: the official posterior sampler at 100/50/25/10/5 steps; the Euler sde/ode samplers and mr_ode:1-3,
  mr_sde:1-2 at 20/10/5;
* denoising (section 4.3, ``sde.kind: denoising``): denoise_ode, denoise_sde and the MR solvers at 20/10/5/2,
  all started at t*(sigma), sigma from the checkpoint's sampler options (or --sigma), which also caps the step
  count at t* (steps are reported as the network evaluations actually made).
Image i is restored with a generator seeded ``seed + i`` (as evaluate.py does), so every sampler and step
count starts from the same noise. Writes the JSON (--out: per-image and mean PSNR/SSIM per sampler:order and step
count), a PSNR-vs-steps plot with one line per sampler:order (--plot, PNG, matplotlib) and prints a markdown
table with one row per sampler:order.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # no version check over the network at import

import torch

from benchmarks.common import (
    REPO_ROOT,
    RESULTS_DIR,
    load_average,
    machine_info,
    markdown_table,
    pick_device,
    write_json,
)
from benchmarks.plots import line_plot

SAMPLER_NAMES = ("sde", "ode", "posterior")
DENOISE_SAMPLER_NAMES = ("denoise_ode", "denoise_sde")
MR_ORDERS = {"mr_ode": (1, 2, 3), "mr_sde": (1, 2)}  # irsde/mr_sampler.py: for both kinds of checkpoint
MR_DEFAULTS = [f"{name}:{order}" for name, orders in MR_ORDERS.items() for order in orders]
FEW_STEPS = [20, 10, 5]
# (sampler[:order], step counts) for an IR-SDE checkpoint: the official posterior sampler over the whole range.
DEFAULT_PLAN = [("posterior", [100, 50, 25, 10, 5]), ("sde", FEW_STEPS), ("ode", FEW_STEPS),
                *[(label, FEW_STEPS) for label in MR_DEFAULTS]]
# A denoising run starts at t*(sigma) (22 of 100 for the demo's sigma 25): counts above t* are capped to it.
DENOISE_STEPS = [20, 10, 5, 2]
DEFAULT_DENOISE_PLAN = [(label, DENOISE_STEPS) for label in (*DENOISE_SAMPLER_NAMES, *MR_DEFAULTS)]
# The demo checkpoint(s) the suite ships: the first that exists is the default.
DEFAULT_CKPTS = (REPO_ROOT / "assets" / "irsde_demo_rain.ckpt",
                 REPO_ROOT / "assets" / "irsde_demo_denoise.ckpt")
DEFAULT_OUT = RESULTS_DIR / "irsde_quality.json"
QUICK_OUT = Path(tempfile.gettempdir()) / "irsde_quality_quick.json"  # never overwrite the real results


def metric_convention(data_cfg: Any, task: str) -> tuple[bool, int]:
    """(Y channel?, crop border) as the demo data module sets them: RGB, border 4 for "sr", unless the
    config says otherwise."""
    from data.demo import SCALE

    y_channel = data_cfg.get("metric_y_channel")
    crop = data_cfg.get("metric_crop_border")
    if crop is None:
        crop = SCALE if task == "sr" else 0
    return bool(y_channel), int(crop)


def load_test_images(task: str, image_size: int, max_images: int | None) -> list[dict[str, Any]]:
    from data.demo import build_demo_split

    # The patch size only matters for training items; keep it valid for small test images.
    dataset = build_demo_split(task, "test", patch_size=min(64, image_size), image_size=image_size,
                               max_images=max_images)
    return [dataset[i] for i in range(len(dataset))]


def parse_sampler(label: str) -> tuple[str, int | None]:
    """"name" or "name:order" (MR solvers only) -> (name, order or None); ValueError naming what is valid."""
    from irsde.samplers import SAMPLERS

    name, _, order = label.partition(":")
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r} in {label!r}; valid: {', '.join(SAMPLERS)}")
    if not order:
        return name, None
    if name not in MR_ORDERS:
        raise ValueError(f"{label!r}: only the MR solvers ({', '.join(MR_ORDERS)}) take an :order")
    if not order.isdigit() or int(order) not in MR_ORDERS[name]:
        raise ValueError(f"{label!r}: {name} orders are {', '.join(map(str, MR_ORDERS[name]))}")
    return name, int(order)


def sampler_options(label: str, options: dict[str, Any], grid: str | None = None) -> dict[str, Any]:
    """The restorer options of one sampler[:order] over the checkpoint-wide ones (sigma when denoising)."""
    name, order = parse_sampler(label)
    extra = {"order": order, "grid": grid} if name in MR_ORDERS else {}
    return {"sampler": name, **options, **{k: v for k, v in extra.items() if v is not None}}


def score_sampler(module: Any, items: list[dict[str, Any]], sampler: str, steps: int, seed: int,
                  device: torch.device, bf16: bool, y_channel: bool, crop: int,
                  options: dict[str, Any] | None = None, grid: str | None = None) -> dict[str, Any]:
    """Restore every image with one sampler setting (``sampler`` may be "mr_ode:3") through the one evaluation
    loop (core.evaluation, as evaluate.py); per-image and mean PSNR/SSIM of the outputs and of the inputs, seconds
    per image."""
    from torch.utils.data import default_collate

    from core.evaluation import ImageMetrics, evaluate
    from core.restorer import build_restorer

    opts = sampler_options(sampler, options or {}, grid)
    restorer = build_restorer(module, {**opts, "steps": steps})
    metrics = ImageMetrics(y_channel, crop)
    evaluate(restorer, [default_collate([item]) for item in items], metrics, device, seed=seed,
             precision="bf16" if bf16 else None, progress=False)
    rows = metrics.per_image()
    summary = metrics.summary(rows)
    return {"label": sampler, "sampler": opts["sampler"], "order": opts.get("order"), "grid": opts.get("grid"),
            "steps": steps, "nfe": restorer.nfe(), "psnr": summary["psnr"],
            "ssim": summary["ssim"], "seconds_per_image": summary["seconds"],
            "per_image_psnr": [r["psnr"] for r in rows], "per_image_ssim": [r["ssim"] for r in rows],
            "input": {"psnr": summary["psnr_input"], "ssim": summary["ssim_input"],
                      "per_image_psnr": [r["psnr_input"] for r in rows],
                      "per_image_ssim": [r["ssim_input"] for r in rows]} if "psnr_input" in summary else None}


def format_table(result: dict[str, Any]) -> str:
    steps = sorted({r["steps"] for r in result["results"]}, reverse=True)
    header = ["PSNR / SSIM", *[f"{s} steps" for s in steps]]
    cells = {(r["label"], r["steps"]): f"{r['psnr']:.2f} / {r['ssim']:.4f}" for r in result["results"]}
    rows = [[name, *[cells.get((name, s), "-") for s in steps]] for name in result["settings"]["samplers"]]
    if result["input"] is not None:
        value = f"{result['input']['psnr']:.2f} / {result['input']['ssim']:.4f}"
        rows.append(["degraded input", *[value] * len(steps)])
    return markdown_table(header, rows)


def write_plot(path: Path, result: dict[str, Any]) -> Path:
    series = {}
    for name in result["settings"]["samplers"]:
        points = [(r["steps"], r["psnr"]) for r in result["results"] if r["label"] == name]
        series[name] = sorted(p for p in points if math.isfinite(p[1]))
    references = {"degraded input": result["input"]["psnr"]} if result["input"] is not None else {}
    title = f"IR-SDE on demo-{result['task']} ({result['num_images']} images): PSNR vs sampler steps"
    return line_plot(path, series, title=title, x_label="sampler steps (network evaluations)",
                     y_label="PSNR (dB)", references=references)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_ckpt = next((p for p in DEFAULT_CKPTS if p.is_file()), DEFAULT_CKPTS[0])
    parser.add_argument("--ckpt", type=Path, default=default_ckpt,
                        help=f"suite checkpoint, with its config (default: first existing of "
                             f"{', '.join(str(p.relative_to(REPO_ROOT)) for p in DEFAULT_CKPTS)})")
    parser.add_argument("--quick", action="store_true", help="2 images, steps 5 and 2: smoke test only")
    parser.add_argument("--steps", type=int, nargs="+",
                        help=f"step counts of every sampler (default: posterior {DEFAULT_PLAN[0][1]}, the others "
                             f"{FEW_STEPS}; denoising {DENOISE_STEPS})")
    parser.add_argument("--samplers", nargs="+", metavar="NAME[:ORDER]",
                        help=f"samplers, the MR solvers with an order, e.g. posterior ode mr_ode:3 mr_sde:2 (default "
                             f"{' '.join(label for label, _ in DEFAULT_PLAN)}; denoising: "
                             f"{' '.join(label for label, _ in DEFAULT_DENOISE_PLAN)})")
    parser.add_argument("--grid", choices=("logsnr", "uniform"), help="time grid of the MR solvers (default logsnr)")
    parser.add_argument("--sigma", type=float, help="noise std for the denoising samplers (default: ckpt's)")
    parser.add_argument("--max-images", type=int, help="first N test images (default all; --quick: 2)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32", help="bf16: bf16 autocast")
    parser.add_argument("--out", type=Path, help=f"JSON output (default {DEFAULT_OUT}; --quick: {QUICK_OUT})")
    parser.add_argument("--plot", type=Path, help="PNG plot (default: the JSON path with .png)")
    args = parser.parse_args(argv)
    if args.steps is not None and min(args.steps) < 1:
        parser.error("--steps must be positive")
    for label in args.samplers or []:
        try:
            parse_sampler(label)
        except ValueError as error:
            parser.error(str(error))
    if args.quick:
        args.steps = args.steps or [5, 2]
        args.max_images = args.max_images or 2
    args.out = args.out or (QUICK_OUT if args.quick else DEFAULT_OUT)
    args.plot = args.plot or args.out.with_suffix(".png")
    return args


def sampler_plan(module: Any, args: argparse.Namespace) -> tuple[list[tuple[str, list[int]]], dict[str, Any]]:
    """([(sampler[:order], requested step counts)], extra restore options) for this checkpoint's kind of SDE."""
    from irsde.sde import DenoisingIRSDE

    if isinstance(module.sde, DenoisingIRSDE):
        sigma = args.sigma if args.sigma is not None else module.sampler_options.get("sigma")
        if sigma is None:
            raise SystemExit("a denoising checkpoint needs its noise level: pass --sigma (0-255 units)")
        plan, options, own = DEFAULT_DENOISE_PLAN, {"sigma": sigma}, DENOISE_SAMPLER_NAMES
    else:
        plan, options, own = DEFAULT_PLAN, {}, SAMPLER_NAMES
    if args.samplers:
        defaults = dict(plan)
        plan = [(label, defaults.get(label, DENOISE_STEPS if options else FEW_STEPS)) for label in args.samplers]
    if args.steps:
        plan = [(label, list(args.steps)) for label, _ in plan]
    wrong = [label for label, _ in plan if parse_sampler(label)[0] not in (*own, *MR_ORDERS)]
    if wrong:
        kind = "denoising" if options else "IR-SDE"
        raise SystemExit(f"sampler(s) {', '.join(wrong)} do not apply to this {kind} checkpoint")
    return [(label, sorted(set(steps), reverse=True)) for label, steps in dict(plan).items()], options


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    from core.loading import module_from_checkpoint
    from core.restorer import build_restorer

    device = pick_device(args.device)
    module, cfg = module_from_checkpoint(args.ckpt)
    module.to(device)
    task = cfg.data.get("task")
    if task is None:
        raise SystemExit(f"{args.ckpt}: its config has no data.task; this benchmark needs a demo checkpoint")
    image_size = int(cfg.data.get("image_size", 128))
    y_channel, crop = metric_convention(cfg.data, task)
    items = load_test_images(task, image_size, args.max_images)
    plan, options = sampler_plan(module, args)
    torch.manual_seed(args.seed)  # anything drawn outside the per-image generators stays reproducible too

    runs, capped = [], {}
    for label, requested in plan:
        # A sampler never takes more steps than it has timesteps (T, or t* when denoising): clip, then drop
        # the duplicates that clipping makes.
        most = build_restorer(module, sampler_options(label, options, args.grid)).nfe()
        capped[label] = sorted({min(s, most) for s in requested}, reverse=True)
        for steps in capped[label]:
            runs.append(score_sampler(module, items, label, steps, args.seed, device, args.precision == "bf16",
                                      y_channel, crop, options, args.grid))
    names = [label for label, _ in plan]
    result: dict[str, Any] = {
        "benchmark": "irsde_quality",
        "checkpoint": str(args.ckpt),
        "task": task,
        "network": build_restorer(module, options).describe(),
        "num_images": len(items),
        "images": [str(item["name"]) for item in items],
        "settings": {"samplers": names,
                     "requested_steps": sorted({s for _, steps in plan for s in steps}, reverse=True),
                     "steps_per_sampler": capped, "mr_grid": args.grid or "logsnr", "T": module.sde.T,
                     "sampler_options": options, "seed": args.seed, "image_size": image_size,
                     "precision": args.precision,
                     "metrics": {"y_channel": y_channel, "crop_border": crop, "quantised_8bit": True}},
        "machine": machine_info(device),
        "input": [run.pop("input") for run in runs][0] if runs else None,  # the same inputs for every run
        "results": runs,
    }
    # Timings above are wall-clock: a busy machine (load above the thread count) inflates them.
    result["machine"]["load_average_at_end"] = load_average()
    write_json(args.out, result)
    write_plot(args.plot, result)
    print(format_table(result))
    print(f"\nwrote {args.out} and {args.plot}")
    return result


if __name__ == "__main__":
    main()
