"""IR-SDE restoration quality against the number of sampler steps, on the built-in demo test images.

    python -m benchmarks.irsde_quality [--ckpt FILE] [--steps 100 50 25 10]
    python -m benchmarks.irsde_quality --quick --ckpt FILE --out /tmp/q.json      (2 images, 5 and 2 steps)

For a trained suite checkpoint, every sampler restores the demo test images of the checkpoint's task
(``data.task`` of its stored config) at each step count, and the PSNR/SSIM of the restored and of the degraded
images are computed with the suite's paper-convention metrics. The samplers are sde, ode and posterior for
an IR-SDE checkpoint; for a denoising checkpoint (section 4.3, ``sde.kind: denoising``) they are denoise_ode
and denoise_sde started at t*(sigma), sigma from the checkpoint's sampler options (or --sigma), which also
caps the step count at t* (steps are reported as the network evaluations actually made).
Image i is restored with a generator seeded ``seed + i`` (as evaluate.py does), so every sampler and step
count starts from the same noise. Writes the JSON (--out), a PSNR-vs-steps plot (--plot, PNG, matplotlib)
and prints a markdown table.
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
DEFAULT_STEPS = [100, 50, 25, 10]
# A denoising run starts at t*(sigma) (22 of 100 for the demo's sigma 25): smaller counts fill the curve.
DEFAULT_DENOISE_STEPS = [100, 50, 25, 10, 5, 2]
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


def score_sampler(module: Any, items: list[dict[str, Any]], sampler: str, steps: int, seed: int,
                  device: torch.device, bf16: bool, y_channel: bool, crop: int,
                  options: dict[str, Any] | None = None) -> dict[str, Any]:
    """Restore every image with one sampler setting through the one evaluation loop (core.evaluation, as
    evaluate.py); per-image and mean PSNR/SSIM of the outputs and of the inputs, seconds per image."""
    from torch.utils.data import default_collate

    from core.evaluation import ImageMetrics, evaluate
    from core.restorer import build_restorer

    restorer = build_restorer(module, {"sampler": sampler, "steps": steps, **(options or {})})
    metrics = ImageMetrics(y_channel, crop)
    evaluate(restorer, [default_collate([item]) for item in items], metrics, device, seed=seed,
             precision="bf16" if bf16 else None, progress=False)
    rows = metrics.per_image()
    summary = metrics.summary(rows)
    return {"sampler": sampler, "steps": steps, "nfe": restorer.nfe(), "psnr": summary["psnr"],
            "ssim": summary["ssim"], "seconds_per_image": summary["seconds"],
            "per_image_psnr": [r["psnr"] for r in rows], "per_image_ssim": [r["ssim"] for r in rows],
            "input": {"psnr": summary["psnr_input"], "ssim": summary["ssim_input"],
                      "per_image_psnr": [r["psnr_input"] for r in rows],
                      "per_image_ssim": [r["ssim_input"] for r in rows]} if "psnr_input" in summary else None}


def format_table(result: dict[str, Any]) -> str:
    steps = sorted({r["steps"] for r in result["results"]}, reverse=True)
    header = ["PSNR / SSIM", *[f"{s} steps" for s in steps]]
    cells = {(r["sampler"], r["steps"]): f"{r['psnr']:.2f} / {r['ssim']:.4f}" for r in result["results"]}
    rows = [[name, *[cells.get((name, s), "-") for s in steps]] for name in result["settings"]["samplers"]]
    if result["input"] is not None:
        value = f"{result['input']['psnr']:.2f} / {result['input']['ssim']:.4f}"
        rows.append(["degraded input", *[value] * len(steps)])
    return markdown_table(header, rows)


def write_plot(path: Path, result: dict[str, Any]) -> Path:
    series = {}
    for name in result["settings"]["samplers"]:
        points = [(r["steps"], r["psnr"]) for r in result["results"] if r["sampler"] == name]
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
                        help=f"step counts (default {DEFAULT_STEPS}; denoising {DEFAULT_DENOISE_STEPS})")
    parser.add_argument("--samplers", nargs="+", choices=SAMPLER_NAMES + DENOISE_SAMPLER_NAMES,
                        help=f"default {' '.join(SAMPLER_NAMES)} ({' '.join(DENOISE_SAMPLER_NAMES)} "
                             f"for a denoising checkpoint)")
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
    if args.quick:
        args.steps = args.steps or [5, 2]
        args.max_images = args.max_images or 2
    args.out = args.out or (QUICK_OUT if args.quick else DEFAULT_OUT)
    args.plot = args.plot or args.out.with_suffix(".png")
    return args


def sampler_plan(module: Any, args: argparse.Namespace) -> tuple[list[str], list[int], dict[str, Any]]:
    """(samplers, requested step counts, extra restore options) for this checkpoint's kind of SDE."""
    from irsde.sde import DenoisingIRSDE

    if isinstance(module.sde, DenoisingIRSDE):
        sigma = args.sigma if args.sigma is not None else module.sampler_options.get("sigma")
        if sigma is None:
            raise SystemExit("a denoising checkpoint needs its noise level: pass --sigma (0-255 units)")
        names, steps, options = DENOISE_SAMPLER_NAMES, DEFAULT_DENOISE_STEPS, {"sigma": sigma}
    else:
        names, steps, options = SAMPLER_NAMES, DEFAULT_STEPS, {}
    names = args.samplers or list(names)
    wrong = [n for n in names if (n in DENOISE_SAMPLER_NAMES) != bool(options)]
    if wrong:
        kind = "denoising" if options else "IR-SDE"
        raise SystemExit(f"sampler(s) {', '.join(wrong)} do not apply to this {kind} checkpoint")
    return list(names), args.steps or steps, options


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
    names, requested, options = sampler_plan(module, args)
    torch.manual_seed(args.seed)  # anything drawn outside the per-image generators stays reproducible too

    runs = []
    for name in names:
        # A sampler never takes more steps than it has timesteps (T, or t* when denoising): clip, then drop
        # the duplicates that clipping makes.
        most = build_restorer(module, {"sampler": name, **options}).nfe()
        for steps in sorted({min(s, most) for s in requested}, reverse=True):
            runs.append(score_sampler(module, items, name, steps, args.seed, device, args.precision == "bf16",
                                      y_channel, crop, options))
    result: dict[str, Any] = {
        "benchmark": "irsde_quality",
        "checkpoint": str(args.ckpt),
        "task": task,
        "network": build_restorer(module, options).describe(),
        "num_images": len(items),
        "images": [str(item["name"]) for item in items],
        "settings": {"samplers": names, "requested_steps": sorted(requested, reverse=True), "T": module.sde.T,
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
