"""DiffPIR restoration quality against the number of network evaluations, on the held-out demo faces.

    python -m benchmarks.diffpir_quality --prior runs/diffpir_prior_demo/.../checkpoints/last.ckpt
    python -m benchmarks.diffpir_quality --quick --out /tmp/q.json      (a tiny random prior, 2 faces, 3 and 2 NFEs)

The 10 held-out demo faces (data.demo, source="faces", 32x32) are degraded and restored for each task and NFE
count (default 20, 50, 100) with the demo prior (--prior: a suite prior checkpoint or a guided-diffusion state
dict; --quick without --prior makes a tiny random GuidedUNet in a temporary file). Tasks:

  inpainting        the generated box mask (mask=box), noise-free (σ_n = 0)
  sr_x2             MATLAB-bicubic x2 downscaling, σ_n = 0.01
  deblur_gaussian   the official Gaussian kernel scaled to a 9x9 grid (kernel_size=9), σ_n = 0.01

with the official sampler settings of each task otherwise (diffpir.sampler.TASK_DEFAULTS). The restorer is built by
diffpir.restorer.diffpir_model from the same arguments as ``python evaluate.py model=diffpir prior_ckpt=PRIOR
data=demo_faces task=... mask=box noise_sigma=... kernel_size=9 nfe=N perceptual=false``, and every image is handled as
evaluate.py does: one torch.Generator seeded ``seed + index`` per image draws the measurement
(DiffPIRRestorer.measure) and then the sampler noise, through evaluate.py's own loop (core.evaluation: PSNR/SSIM
with BasicSR semantics on the 8-bit images, the demo data module's convention), so the numbers equal
evaluate.py's. Recorded: PSNR/SSIM of the restored images and of the degraded inputs (where the sizes match: not
for SR), seconds per image. Writes the JSON (--out), a PSNR-vs-NFE figure (--plot, PNG) and prints markdown tables.
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
    RESULTS_DIR,
    load_average,
    machine_info,
    markdown_table,
    pick_device,
    torch_threads,
    write_json,
)
from benchmarks.plots import line_plot

TASKS = ("inpainting", "sr_x2", "deblur_gaussian")
# The evaluate.py model=diffpir arguments of each task (everything else: the official defaults of the task).
TASK_ARGS: dict[str, dict[str, Any]] = {
    "inpainting": {"mask": "box", "noise_sigma": 0.0},
    "sr_x2": {"noise_sigma": 0.01},
    "deblur_gaussian": {"kernel_size": 9, "noise_sigma": 0.01},
}
DEFAULT_NFE = [20, 50, 100]
QUICK_NFE = [3, 2]
IMAGE_SIZE = 32  # the demo faces' size, the demo prior's training size
DEFAULT_OUT = RESULTS_DIR / "diffpir_quality.json"
QUICK_OUT = Path(tempfile.gettempdir()) / "diffpir_quality_quick.json"  # never overwrite the real results


# ----------------------------------------------------------------------------------------------------------
# Inputs
# ----------------------------------------------------------------------------------------------------------


def load_faces(image_size: int, max_images: int | None) -> list[dict[str, Any]]:
    """The held-out demo faces as evaluate.py's test loader yields them (batch 1, collated)."""
    from torch.utils.data import default_collate

    from data.demo import build_demo_split

    dataset = build_demo_split(
        "inpaint", "test", patch_size=image_size, image_size=image_size, max_images=max_images, source="faces"
    )
    return [default_collate([dataset[i]]) for i in range(len(dataset))]


def metric_convention(image_size: int) -> tuple[bool, int]:
    """(Y channel?, crop border) of the demo faces' data module (configs/data/demo_faces.yaml): what evaluate.py
    scores with, except that SR tasks crop `scale` pixels (the official DiffPIR SR scores; evaluate.py too)."""
    from data.datamodules import DemoDataModule

    datamodule = DemoDataModule(task="inpaint", source="faces", image_size=image_size, patch_size=image_size)
    return bool(datamodule.metric_y_channel), int(datamodule.metric_crop_border)


def write_random_prior(path: Path, seed: int) -> Path:
    """A tiny random GuidedUNet (small_config, 32x32) saved as a guided-diffusion state dict: --quick only."""
    from diffpir.prior.unet import GuidedUNet, small_config

    torch.manual_seed(seed)
    torch.save(GuidedUNet(**small_config(image_size=IMAGE_SIZE)).state_dict(), path)
    return path


def prior_module(prior: Path, task: str, device: torch.device):
    """What evaluate.py builds for ``model=diffpir prior_ckpt=PRIOR task=TASK <TASK_ARGS>``."""
    from diffpir.restorer import diffpir_model

    return diffpir_model(str(prior), task, **TASK_ARGS[task]).to(device)


# ----------------------------------------------------------------------------------------------------------
# Scoring
# ----------------------------------------------------------------------------------------------------------


def score_task(module: Any, batches: list[dict[str, Any]], nfe: int, seed: int, device: torch.device, bf16: bool,
               y_channel: bool, crop: int) -> dict[str, Any]:
    """Restore every face at ``nfe`` evaluations through the one evaluation loop (core.evaluation, as
    evaluate.py); scores of outputs and inputs."""
    from core.evaluation import ImageMetrics, evaluate
    from core.restorer import build_restorer

    restorer = build_restorer(module, {"steps": nfe})
    metrics = ImageMetrics(y_channel=y_channel, crop_border=crop)
    evaluate(restorer, batches, metrics, device, seed=seed, precision="bf16" if bf16 else None, progress=False)
    rows = metrics.per_image()
    summary = metrics.summary(rows)
    inputs = None
    if "psnr_input" in summary:
        inputs = {"psnr": summary["psnr_input"], "ssim": summary["ssim_input"],
                  "per_image_psnr": [r["psnr_input"] for r in rows], "per_image_ssim": [r["ssim_input"] for r in rows]}
    return {"nfe": restorer.nfe(), "requested_nfe": nfe, "psnr": summary["psnr"], "ssim": summary["ssim"],
            "seconds_per_image": summary["seconds"], "per_image_psnr": [r["psnr"] for r in rows],
            "per_image_ssim": [r["ssim"] for r in rows], "input": inputs}


# ----------------------------------------------------------------------------------------------------------
# Report
# ----------------------------------------------------------------------------------------------------------


def format_tables(result: dict[str, Any]) -> str:
    nfes = result["settings"]["nfe"]
    header = ["PSNR / SSIM", *[f"{n} NFE" for n in nfes], "degraded input"]
    timing_header = ["s / image", *[f"{n} NFE" for n in nfes]]
    rows, timing_rows = [], []
    for task, entry in result["tasks"].items():
        cells = {r["requested_nfe"]: r for r in entry["results"]}
        inputs = entry["input"]
        rows.append(
            [
                task,
                *[f"{cells[n]['psnr']:.2f} / {cells[n]['ssim']:.4f}" if n in cells else "-" for n in nfes],
                f"{inputs['psnr']:.2f} / {inputs['ssim']:.4f}" if inputs else "- (other size)",
            ]
        )
        timing_rows.append([task, *[f"{cells[n]['seconds_per_image']:.2f}" if n in cells else "-" for n in nfes]])
    return markdown_table(header, rows) + "\n\n" + markdown_table(timing_header, timing_rows)


def write_plot(path: Path, result: dict[str, Any]) -> Path:
    """PSNR against NFE, one line per task (dotted: the degraded input's PSNR)."""
    series = {
        task: sorted((r["nfe"], r["psnr"]) for r in entry["results"] if math.isfinite(r["psnr"]))
        for task, entry in result["tasks"].items()
    }
    references = {f"{task} input": entry["input"]["psnr"] for task, entry in result["tasks"].items()
                  if entry["input"] is not None}
    title = f"DiffPIR on the demo faces ({result['num_images']} images): PSNR vs NFE"
    return line_plot(path, series, title=title, x_label="network evaluations (NFE)", y_label="PSNR (dB)",
                     references=references)


# ----------------------------------------------------------------------------------------------------------
# Entry point
# ----------------------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prior", type=Path, help="the demo prior (required unless --quick)")
    parser.add_argument("--quick", action="store_true", help="2 faces, NFE 3 and 2 (a random prior without --prior)")
    parser.add_argument("--nfe", type=int, nargs="+", help=f"NFE counts (default {DEFAULT_NFE}; --quick {QUICK_NFE})")
    parser.add_argument("--tasks", nargs="+", choices=TASKS, default=list(TASKS))
    parser.add_argument("--max-images", type=int, help="first N held-out faces (default all 10; --quick: 2)")
    parser.add_argument("--image-size", type=int, default=IMAGE_SIZE, help="face size (the prior's training size)")
    parser.add_argument("--seed", type=int, default=0, help="image i uses seed + i, as evaluate.py seed=")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32", help="bf16: bf16 autocast")
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's choice)")
    parser.add_argument("--out", type=Path, help=f"JSON output (default {DEFAULT_OUT}; --quick: {QUICK_OUT})")
    parser.add_argument("--plot", type=Path, help="PNG figure (default: the JSON path with .png)")
    parser.add_argument("--no-plot", action="store_true", help="do not draw the figure")
    args = parser.parse_args(argv)
    if args.prior is None and not args.quick:
        parser.error(
            "--prior PATH is required (the demo prior: train.py experiment=diffpir_prior_demo); "
            "--quick runs a tiny random prior instead"
        )
    if args.prior is not None and not args.prior.is_file():
        parser.error(f"--prior {args.prior}: no such file")
    if args.nfe is not None and min(args.nfe) < 2:
        parser.error("--nfe counts must be at least 2")
    if args.quick:
        args.nfe = args.nfe or QUICK_NFE
        args.max_images = args.max_images or 2
    args.nfe = sorted(set(args.nfe or DEFAULT_NFE))
    args.out = args.out or (QUICK_OUT if args.quick else DEFAULT_OUT)
    args.plot = args.plot or args.out.with_suffix(".png")
    return args


def benchmark(args: argparse.Namespace, prior: Path, device: torch.device) -> dict[str, Any]:
    from core.restorer import build_restorer

    y_channel, crop = metric_convention(args.image_size)
    batches = load_faces(args.image_size, args.max_images)
    torch.manual_seed(args.seed)  # anything drawn outside the per-image generators stays reproducible too
    tasks: dict[str, Any] = {}
    for task in args.tasks:
        module = prior_module(prior, task, device)
        restorer = build_restorer(module)
        task_crop = restorer.scoring().get("crop_border", crop)
        runs = [
            score_task(module, batches, n, args.seed, device, args.precision == "bf16", y_channel, task_crop)
            for n in args.nfe
        ]
        tasks[task] = {
            "crop_border": task_crop,
            "arguments": TASK_ARGS[task],
            "sampler": {k: v for k, v in restorer.settings().items() if k not in ("nfe", "steps")},
            "describe": restorer.describe(),
            "input": runs[0]["input"],  # the measurement depends on the seed only, not on the NFE count
            "results": [{k: v for k, v in run.items() if k != "input"} for run in runs],
        }
    return {
        "benchmark": "diffpir_quality",
        "quick": args.quick,
        "prior": str(args.prior) if args.prior is not None else "tiny random prior (--quick)",
        "num_images": len(batches),
        "images": [str(batch["name"][0]) for batch in batches],
        "settings": {
            "nfe": args.nfe,
            "tasks": list(args.tasks),
            "seed": args.seed,
            "image_size": args.image_size,
            "precision": args.precision,
            "metrics": {"y_channel": y_channel, "crop_border": crop, "sr_crop_border": "the scale",
                        "quantised_8bit": True},
            "seeding": "image i: torch.Generator seeded seed + i draws the measurement, then the sampler noise",
        },
        "machine": machine_info(device),
        "tasks": tasks,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    device = pick_device(args.device)
    with torch_threads(args.threads), tempfile.TemporaryDirectory() as tmp:
        prior = args.prior or write_random_prior(Path(tmp) / "random_prior.pt", args.seed)
        result = benchmark(args, prior, device)
    # Timings are wall-clock: a busy machine (load above the thread count) inflates them.
    result["machine"]["load_average_at_end"] = load_average()
    write_json(args.out, result)
    drawn = None if args.no_plot else write_plot(args.plot, result)
    print(format_tables(result))
    print(f"\nwrote {args.out}" + (f" and {args.plot}" if drawn else ""))
    return result


if __name__ == "__main__":
    main()
