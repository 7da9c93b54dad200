"""Images per second of evaluate.py on 1 and 2 processes at the same total thread count (issue: evaluation on
many devices). Each cell is a fresh `python evaluate.py` over the same folder of test images with the shipped
demo denoiser; throughput is metrics.json's images_per_second (all ranks' images over the time from the start of
testing to the gathered results: the processes' start-up is left out, the gathering is in). Cells are
interleaved over `--repeats`, and the two runs' metrics must agree (the scaling changes speed, not numbers).

    python -m benchmarks.inference_scaling [--images 16] [--size 96] [--cells 1x2 2x1 1x1] [--repeats 2]
    python -m benchmarks.inference_scaling --device cuda --cells 1x1   (scripts/gpu_check.sh: one GPU)

A cell PxT is P processes of T threads each (OMP_NUM_THREADS): 1x2 and 2x1 use the same two cores (the issue's
comparison); 1x1 shows what one process does on one core, so 2x1 / 1x1 is the scaling in processes alone.
The metrics of every cell must agree (bit for bit at equal threads per process, as the tests check; to ~1e-5 dB
across thread counts, which split float sums differently). Output: benchmarks/results/inference_scaling_<device>.json
and a table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from benchmarks.common import REPO_ROOT, RESULTS_DIR, machine_info, markdown_table, mean, write_json

CKPT = "assets/irsde_demo_denoise.ckpt"


def make_folder(root: Path, images: int, size: int) -> tuple[Path, Path]:
    """`images` noisy/clean pairs: crops of scikit-image's bundled photographs with Gaussian noise (sigma 25)."""
    from skimage import data as skdata

    from core.io import write_image

    photos = [np.asarray(getattr(skdata, n)())[..., :3] for n in ("astronaut", "chelsea", "coffee", "rocket")]
    rng = np.random.default_rng(0)
    for i in range(images):
        photo = photos[i % len(photos)]
        top, left = (int(rng.integers(0, d - size)) for d in photo.shape[:2])
        gt = photo[top:top + size, left:left + size].astype(np.float64)
        lq = np.clip(np.rint(gt + rng.normal(0, 25, gt.shape)), 0, 255).astype(np.uint8)
        write_image(root / "gt" / f"img{i:03d}.png", gt.astype(np.uint8))
        write_image(root / "lq" / f"img{i:03d}.png", lq)
    return root / "lq", root / "gt"


def run_cell(procs: int, threads_each: int, device: str, lq: Path, gt: Path, out: Path, steps: int) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE",
                                                            "LOCAL_RANK", "NODE_RANK")}
    env.update(OMP_NUM_THREADS=str(threads_each), NO_ALBUMENTATIONS_UPDATE="1", PYTHONPATH=str(REPO_ROOT))
    accelerator = "gpu" if device == "cuda" else "cpu"
    cmd = [sys.executable, "evaluate.py", f"ckpt={CKPT}", "data=folders", f"data.lq_dir={lq}", f"data.gt_dir={gt}",
           "data.num_workers=0", "data.verify=false", "sampler=mr_sde", f"steps={steps}", f"out={out}",
           "progress=false", "perceptual=false", "save_images=false", f"trainer.devices={procs}",
           f"trainer.accelerator={accelerator}", f"trainer.strategy={'ddp' if procs > 1 else 'auto'}"]
    subprocess.run(cmd, cwd=REPO_ROOT, env=env, check=True, capture_output=True, text=True)
    return json.loads((out / "metrics.json").read_text())


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--cells", nargs="+", default=["1x2", "2x1", "1x1"], help="PROCESSESxTHREADS each")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    import torch

    cells = [tuple(int(v) for v in c.lower().split("x")) for c in args.cells]
    runs: dict[tuple[int, int], list[dict]] = {c: [] for c in cells}
    with tempfile.TemporaryDirectory() as tmp:
        lq, gt = make_folder(Path(tmp) / "data", args.images, args.size)
        for repeat in range(args.repeats):
            for procs, threads in cells:  # interleaved: a slow moment of the machine hits every cell
                runs[(procs, threads)].append(run_cell(procs, threads, args.device, lq, gt,
                                                       Path(tmp) / f"out{procs}x{threads}_{repeat}", args.steps))
    base = mean([c["images_per_second"] for c in runs[cells[0]]])
    psnrs = [c["psnr"] for cell in runs.values() for c in cell]
    results, rows = [], []
    for (procs, threads), cell in runs.items():
        rate = mean([c["images_per_second"] for c in cell])
        results.append({"processes": procs, "threads_per_process": threads, "images_per_second": rate,
                        "runs": [c["images_per_second"] for c in cell], f"speedup_vs_{args.cells[0]}": rate / base,
                        "psnr": sorted({c["psnr"] for c in cell})})
        rows.append([f"{procs} x {threads}", f"{rate:.3f}", f"{rate / base:.2f}x", f"{cell[0]['psnr']:.4f}"])
    spread = max(psnrs) - min(psnrs)
    report = {"benchmark": "inference_scaling", "machine": machine_info(torch.device(args.device)),
              "settings": vars(args), "results": results, "psnr_spread_db": spread}
    path = write_json(Path(args.out) if args.out else RESULTS_DIR / f"inference_scaling_{args.device}.json", report)
    print(markdown_table(["processes x threads", "images/s", f"vs {args.cells[0]}", "PSNR"], rows))
    print(f"PSNR spread over all cells: {spread:.1e} dB; wrote {path}")
    return report


if __name__ == "__main__":
    main()
