"""What a user waits for: restore.py on one large noisy photo, official settings against the fast path.

    python -m benchmarks.irsde_large_photo [--ckpt assets/irsde_demo_denoise.ckpt] [--tile 256]
    python -m benchmarks.irsde_large_photo --quick            (a 96x96 crop: a smoke run)

The photo is scikit-image's retina (1411x1411, RGB) with Gaussian noise of std 25/255 (seeded), written as an
8-bit PNG; each configuration runs `python restore.py` in-process on it with tile=256 and is timed end to end
(load, restore, write), then scored against the clean photo with evaluate.py's metric code. Configurations:
the checkpoint's own sampler (the shipped demo model: the official denoising ODE from t*, 22 NFEs) in float32,
and few-step MR solvers in bf16 + channels_last.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import numpy as np
import torch

from benchmarks.common import RESULTS_DIR, load_average, machine_info, markdown_table, torch_threads, write_json

DEFAULT_OUT = RESULTS_DIR / "irsde_large_photo.json"
QUICK_OUT = RESULTS_DIR / "irsde_large_photo_quick.json"
CONFIGS = [
    {"name": "official", "label": "official: denoise_ode from t*, float32", "precision": "32"},
    {"name": "mr_ode:2@5", "label": "fast: mr_ode:2, 5 steps, bf16 + channels_last", "precision": "bf16",
     "sampler": "mr_ode", "steps": 5, "order": 2},
    {"name": "mr_ode:1@2", "label": "fast: mr_ode:1, 2 steps, bf16 + channels_last", "precision": "bf16",
     "sampler": "mr_ode", "steps": 2, "order": 1},
]


def noisy_retina(folder: Path, crop: int | None, sigma: float = 25.0, seed: int = 0) -> tuple[Path, Path]:
    """(noisy PNG, clean PNG) of scikit-image's retina, optionally a crop x crop corner."""
    from skimage import data

    from core.io import write_image

    clean = data.retina()[:crop, :crop] if crop else data.retina()
    clean_t = torch.from_numpy(np.ascontiguousarray(clean)).permute(2, 0, 1).float() / 255
    noise = torch.randn(clean_t.shape, generator=torch.Generator().manual_seed(seed)) * sigma / 255
    paths = folder / "noisy" / "retina.png", folder / "clean" / "retina.png"
    write_image(paths[0], (clean_t + noise).clamp(0, 1))
    write_image(paths[1], clean_t)
    return paths


def run(config: dict[str, Any], ckpt: str, noisy: Path, clean: Path, out: Path, tile: int) -> dict[str, Any]:
    import restore
    from core.io import read_image, to_tensor
    from core.metrics import psnr_ssim

    argv = [f"ckpt={ckpt}", f"input={noisy}", f"output={out}", f"tile={tile}", "progress=false",
            f"precision={config['precision']}"]
    argv += [f"{k}={config[k]}" for k in ("sampler", "steps", "order") if k in config]
    start = time.perf_counter()
    (written,) = restore.main(argv)
    seconds = time.perf_counter() - start
    restored, gt, lq = (to_tensor(read_image(p))[None] for p in (written, clean, noisy))
    score, score_input = (psnr_ssim(x, gt, y_channel=False, crop_border=0) for x in (restored, lq))
    return {**config, "seconds": seconds, "psnr": float(score[0]), "ssim": float(score[1]),
            "psnr_input": float(score_input[0]), "ssim_input": float(score_input[1])}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", default="assets/irsde_demo_denoise.ckpt")
    parser.add_argument("--tile", type=int, default=256)
    parser.add_argument("--quick", action="store_true", help="a 96x96 crop, tile 64")
    parser.add_argument("--threads", type=int)
    parser.add_argument("--configs", nargs="+", choices=[c["name"] for c in CONFIGS],
                        default=[c["name"] for c in CONFIGS], help="which configurations to run (default all)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    configs = [c for c in CONFIGS if c["name"] in args.configs]
    tile = 64 if args.quick else args.tile
    with tempfile.TemporaryDirectory() as tmp, torch_threads(args.threads):
        noisy, clean = noisy_retina(Path(tmp), 96 if args.quick else None)
        rows = [run(c, args.ckpt, noisy, clean, Path(tmp) / f"out{i}", tile) for i, c in enumerate(configs)]
    official = next((r["seconds"] for r in rows if r["name"] == "official"), None)
    for row in rows:
        row["speedup_vs_official"] = official / row["seconds"] if official else None
    result = {"benchmark": "irsde_large_photo", "ckpt": args.ckpt, "tile": tile, "quick": args.quick,
              "machine": machine_info(torch.device("cpu")), "load_average_after": load_average(), "rows": rows}
    out = args.out or (QUICK_OUT if args.quick else DEFAULT_OUT)
    write_json(out, result)
    table = [[r["label"], f"{r['seconds']:.0f}",
              f"{r['speedup_vs_official']:.1f}x" if r["speedup_vs_official"] else "-",
              f"{r['psnr_input']:.2f} -> {r['psnr']:.2f}", f"{r['ssim']:.4f}"] for r in rows]
    print(markdown_table(["configuration", "seconds", "vs official", "PSNR", "SSIM"], table))
    print(f"\nwrote {out}")
    return result


if __name__ == "__main__":
    main()
