"""What a user waits for: restore.py on one large noisy photo, pixel-space IR-SDE against latent Refusion.

    python -m benchmarks.irsde_large_photo --threads 2      (all rows, one process each, in one run)
    python -m benchmarks.irsde_large_photo --quick          (a 96x96 crop: a smoke run)

The photo is scikit-image's retina (1411x1411, RGB) with Gaussian noise of std 25/255 (seeded), written as an
8-bit PNG. Each row runs `python restore.py` on it in a fresh process (so each row's peak memory is its own),
timed end to end inside that process (compose the config, load the checkpoint, read, restore, write; not the
Python imports), and is scored against the clean photo with evaluate.py's metric code. Whole images, as the
official code runs them (`--tile N` tiles the pixel rows).

Rows: the pixel demo denoiser (assets/irsde_demo_denoise.ckpt) with the official denoising test (the reverse
ODE from t* on the 100-step schedule, float32) and the fast MR solvers in bf16 + channels_last; the latent
Refusion denoiser (assets/refusion_latent_demo_denoise.ckpt, trained on the same data in the same 19-minute
budget, 2.6 M parameters against 2.4 M) with the official latent test (the reverse SDE over all 100 steps,
float32) and its best MR solver at <= 10 steps in bf16 (chosen on the held-out demo photos, README).
Peak memory: VmHWM of the row's process on CPU, torch.cuda.max_memory_allocated on CUDA.
"""

from __future__ import annotations

import argparse
import json
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

from benchmarks.common import (
    RESULTS_DIR,
    emit_probe_result,
    load_average,
    machine_info,
    markdown_table,
    peak_rss_bytes,
    run_probe,
    torch_threads,
    write_json,
)

DEFAULT_OUT = RESULTS_DIR / "irsde_large_photo.json"
QUICK_OUT = RESULTS_DIR / "irsde_large_photo_quick.json"
PIXEL_CKPT = "assets/irsde_demo_denoise.ckpt"
LATENT_CKPT = "assets/refusion_latent_demo_denoise.ckpt"
CONFIGS = [
    {"name": "official", "model": "pixel", "precision": "32",
     "label": "pixel IR-SDE, official: denoise_ode from t* (T 100, 22 NFEs), float32"},
    {"name": "mr_ode:2@5", "model": "pixel", "precision": "bf16", "sampler": "mr_ode", "steps": 5, "order": 2,
     "label": "pixel IR-SDE, fast: mr_ode:2, 5 steps, bf16 + channels_last"},
    {"name": "mr_ode:1@2", "model": "pixel", "precision": "bf16", "sampler": "mr_ode", "steps": 2, "order": 1,
     "label": "pixel IR-SDE, fast: mr_ode:1, 2 steps, bf16 + channels_last"},
    {"name": "latent:sde@100", "model": "latent", "precision": "32",
     "label": "latent Refusion, official: reverse SDE, 100 steps, float32"},
    {"name": "latent:mr_sde:1@10", "model": "latent", "precision": "bf16", "sampler": "mr_sde", "steps": 10,
     "order": 1, "label": "latent Refusion, fast: mr_sde:1, 10 steps, bf16 + channels_last"},
    {"name": "latent:mr_sde:1@5", "model": "latent", "precision": "bf16", "sampler": "mr_sde", "steps": 5,
     "order": 1, "label": "latent Refusion, fast: mr_sde:1, 5 steps, bf16 + channels_last"},
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


def restore_row(config: dict[str, Any], ckpt: str, noisy: Path, clean: Path, out: Path, tile: int,
                device: str) -> dict[str, Any]:
    """One row, in this process: restore.py timed end to end, then scored."""
    import core.inference  # noqa: F401  (restore.py's lazy imports: not part of the timed run)
    import restore
    from core.io import read_image, to_tensor
    from core.metrics import psnr_ssim

    argv = [f"ckpt={ckpt}", f"input={noisy}", f"output={out}", f"tile={tile}", "progress=false",
            f"precision={config['precision']}", f"device={device}"]
    argv += [f"{k}={config[k]}" for k in ("sampler", "steps", "order") if k in config]
    rss_before = peak_rss_bytes()
    start = time.perf_counter()
    (written,) = restore.main(argv)
    seconds = time.perf_counter() - start
    restored, gt, lq = (to_tensor(read_image(p))[None] for p in (written, clean, noisy))
    score, score_input = (psnr_ssim(x, gt, y_channel=False, crop_border=0) for x in (restored, lq))
    cuda = device == "cuda" and torch.cuda.is_available()
    return {**config, "ckpt": ckpt, "tile": tile, "seconds": seconds, "psnr": float(score[0]),
            "ssim": float(score[1]), "psnr_input": float(score_input[0]), "ssim_input": float(score_input[1]),
            "peak_rss_bytes": peak_rss_bytes(), "rss_before_bytes": rss_before,
            "peak_cuda_bytes": torch.cuda.max_memory_allocated() if cuda else None}


def probe(spec: str) -> None:
    """The --probe entry: one row in this fresh process, its result as one JSON line."""
    job = json.loads(spec)
    with torch_threads(job["threads"]):
        row = restore_row(job["config"], job["ckpt"], Path(job["noisy"]), Path(job["clean"]), Path(job["out"]),
                          job["tile"], job["device"])
    emit_probe_result(row)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", default=PIXEL_CKPT, help="the pixel-space IR-SDE checkpoint")
    parser.add_argument("--latent-ckpt", default=LATENT_CKPT, help="the latent Refusion checkpoint")
    parser.add_argument("--tile", type=int, default=0, help="tile the pixel rows (0: whole, as the official code)")
    parser.add_argument("--quick", action="store_true", help="a 96x96 crop")
    parser.add_argument("--threads", type=int)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--configs", nargs="+", choices=[c["name"] for c in CONFIGS],
                        default=[c["name"] for c in CONFIGS], help="which rows to run (default all)")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--probe", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.probe:
        probe(args.probe)
        return {}
    configs = [c for c in CONFIGS if c["name"] in args.configs]
    threads = args.threads or torch.get_num_threads()
    with tempfile.TemporaryDirectory() as tmp:
        noisy, clean = noisy_retina(Path(tmp), 96 if args.quick else None)
        rows = []
        for i, config in enumerate(configs):
            latent = config["model"] == "latent"
            job = {"config": config, "ckpt": args.latent_ckpt if latent else args.ckpt, "noisy": str(noisy),
                   "clean": str(clean), "out": str(Path(tmp) / f"out{i}"), "threads": threads,
                   "tile": 0 if latent else args.tile, "device": args.device}
            rows.append(run_probe("benchmarks.irsde_large_photo", ["--probe", json.dumps(job)]))
    official = next((r for r in rows if r["name"] == "official"), None)
    for row in rows:
        row["speedup_vs_official"] = official["seconds"] / row["seconds"] if official else None
        row["psnr_vs_official"] = row["psnr"] - official["psnr"] if official else None
    result = {"benchmark": "irsde_large_photo", "ckpt": args.ckpt, "latent_ckpt": args.latent_ckpt,
              "tile": args.tile, "quick": args.quick, "machine": machine_info(torch.device(args.device)),
              "threads": threads, "load_average_after": load_average(), "rows": rows}
    out = args.out or (QUICK_OUT if args.quick else DEFAULT_OUT)
    write_json(out, result)
    print(format_report(result))
    print(f"\nwrote {out}")
    return result


def format_report(result: dict[str, Any]) -> str:
    def memory(row: dict[str, Any]) -> str:
        peak = row["peak_cuda_bytes"] or row["peak_rss_bytes"]
        return f"{peak / 2**30:.2f}"

    table = [[r["label"], f"{r['seconds']:.1f}",
              f"{r['speedup_vs_official']:.1f}x" if r["speedup_vs_official"] else "-", memory(r),
              f"{r['psnr_input']:.2f} -> {r['psnr']:.2f}", f"{r['ssim']:.4f}"] for r in result["rows"]]
    unit = "peak GiB (CUDA)" if result["rows"] and result["rows"][0]["peak_cuda_bytes"] else "peak GiB (RSS)"
    return markdown_table(["configuration", "seconds", "vs official", unit, "PSNR", "SSIM"], table)


if __name__ == "__main__":
    main()
