"""Validation PSNR against training steps of IR-SDE runs, read from their CSV logs: which recipe trains faster.

    python -m benchmarks.irsde_recipes noise=runs/irsde_demo_derain_noise residual=runs/irsde_demo_derain_residual \
        [--input-psnr 20.11] [--out benchmarks/results/irsde_recipes.json]

Each LABEL=DIR is a run folder (or a folder of runs: every ``metrics.csv`` below it is read, so a resumed run's
folders join up); its ``val/psnr`` rows give one line of the plot (PNG beside the JSON) and one row of the table.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import RESULTS_DIR, markdown_table, write_json
from benchmarks.plots import line_plot

DEFAULT_OUT = RESULTS_DIR / "irsde_recipes.json"


def validation_curve(folder: Path) -> list[tuple[int, float]]:
    """(step, val/psnr) of every validation logged under `folder`, by step (the logged step is 0-based)."""
    points = {}
    for path in sorted(folder.rglob("metrics.csv")):
        for row in csv.DictReader(open(path)):
            if row.get("val/psnr"):
                points[int(row["step"]) + 1] = float(row["val/psnr"])
    if not points:
        raise SystemExit(f"{folder}: no val/psnr rows in any metrics.csv below it (train with logger=csv)")
    return sorted(points.items())


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="LABEL=RUN_FOLDER")
    parser.add_argument("--input-psnr", type=float, help="the degraded inputs' PSNR, drawn as a reference line")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    curves = {}
    for spec in args.runs:
        label, _, folder = spec.partition("=")
        curves[label] = validation_curve(Path(folder))
    result = {"benchmark": "irsde_recipes", "input_psnr": args.input_psnr,
              "curves": {label: [{"step": s, "val_psnr": p} for s, p in points] for label, points in curves.items()}}
    write_json(args.out, result)
    references = {"degraded input": args.input_psnr} if args.input_psnr is not None else None
    line_plot(args.out.with_suffix(".png"), {k: list(v) for k, v in curves.items()}, "IR-SDE recipes on the demo",
              "training steps", "validation PSNR (dB)", references, log_x=False)
    steps = sorted({s for points in curves.values() for s, _ in points})
    rows = [[label] + [f"{dict(points)[s]:.2f}" if s in dict(points) else "-" for s in steps]
            for label, points in curves.items()]
    print(markdown_table(["val PSNR (dB) at step"] + [str(s) for s in steps], rows))
    print(f"\nwrote {args.out} and {args.out.with_suffix('.png')}")
    return result


if __name__ == "__main__":
    main()
