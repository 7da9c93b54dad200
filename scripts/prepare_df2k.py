"""Prepare DF2K (DIV2K + Flickr2K HR images) for Real-ESRGAN-style training (DiffIR-RealSR), as the official
Real-ESRGAN docs/Training.md does in three steps:

1. multi-scale copies (scripts/generate_multiscale_DF2K.py): each image resized with PIL's Lanczos by 0.75, 0.5
   and 1/3 (size int(w * s) x int(h * s)), saved as <name>T0.png, T1, T2, plus T3 whose shortest edge is 400;
2. sub-images (scripts/extract_subimages.py, run with --crop_size 400 --step 200, thresh_size 0): crops of 400 x
   400 every 200 px, plus a last row / column flush with the border when more than thresh_size pixels are left,
   saved as <name>_s001.png, ... in row-major order, from the originals and from the multi-scale copies (DiffIR's
   meta info lists both); images smaller than the crop give none (the official worker fails on them silently);
3. a meta-info file (scripts/generate_meta_info.py) listing every sub-image relative to the output folder.

    python scripts/prepare_df2k.py --input /data/DIV2K/DIV2K_train_HR /data/Flickr2K/Flickr2K_HR --output /data/DF2K

writes /data/DF2K/{DF2K_HR_sub, DF2K_multiscale, DF2K_multiscale_sub}/ and meta_info/meta_info_DF2Kmultiscale_sub.txt.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from pathlib import Path

from PIL import Image

SCALES = (0.75, 0.5, 1 / 3)
SHORTEST_EDGE = 400
CROP_SIZE, STEP, THRESH_SIZE = 400, 200, 0
COMPRESSION_LEVEL = 3  # the official cv2.IMWRITE_PNG_COMPRESSION
EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}
MULTISCALE, HR_SUB, MULTISCALE_SUB = "DF2K_multiscale", "DF2K_HR_sub", "DF2K_multiscale_sub"
META_INFO = Path("meta_info") / "meta_info_DF2Kmultiscale_sub.txt"


def multiscale_sizes(width: int, height: int, scales: Sequence[float] = SCALES,
                     shortest_edge: int = SHORTEST_EDGE) -> list[tuple[int, int]]:
    """(width, height) of each multi-scale copy: int(w * s) x int(h * s), then the one whose shorter side is
    shortest_edge (the longer side int(shortest_edge * ratio), as the official script computes it)."""
    sizes = [(int(width * s), int(height * s)) for s in scales]
    if width < height:
        sizes.append((shortest_edge, int(shortest_edge * (height / width))))
    else:
        sizes.append((int(shortest_edge * (width / height)), shortest_edge))
    return sizes


def crop_starts(length: int, crop_size: int = CROP_SIZE, step: int = STEP, thresh_size: int = THRESH_SIZE) -> list[int]:
    """Start offsets of the crops along one side: every `step`, plus one flush with the end when more than
    `thresh_size` pixels would be left out; none when the side is shorter than the crop."""
    if length < crop_size:
        return []
    starts = list(range(0, length - crop_size + 1, step))
    if length - (starts[-1] + crop_size) > thresh_size:
        starts.append(length - crop_size)
    return starts


def sub_image_name(stem: str, index: int, suffix: str) -> str:
    # The official script drops "x2", "x3", "x4" and "x8" from the name (DIV2K's LR files are 0001x4.png).
    for tag in ("x2", "x3", "x4", "x8"):
        stem = stem.replace(tag, "")
    return f"{stem}_s{index:03d}{suffix}"


def extract(image: Image.Image, stem: str, folder: Path, crop_size: int, step: int, thresh_size: int,
            compression_level: int) -> list[Path]:
    """Save the sub-images of one image into folder (row-major order, numbered from 1)."""
    width, height = image.size
    written = []
    tops, lefts = crop_starts(height, crop_size, step, thresh_size), crop_starts(width, crop_size, step, thresh_size)
    for index, (top, left) in enumerate(((t, s) for t in tops for s in lefts), start=1):
        path = folder / sub_image_name(stem, index, ".png")
        image.crop((left, top, left + crop_size, top + crop_size)).save(path, compress_level=compression_level)
        written.append(path)
    return written


def prepare_one(path: Path, output: Path, scales: Sequence[float], shortest_edge: int, crop_size: int, step: int,
                thresh_size: int, compression_level: int) -> list[Path]:
    """Multi-scale copies and all sub-images of one HR image; returns the sub-images written."""
    with Image.open(path) as opened:
        image = opened.copy()
    written = extract(image, path.stem, output / HR_SUB, crop_size, step, thresh_size, compression_level)
    for idx, size in enumerate(multiscale_sizes(*image.size, scales, shortest_edge)):
        scaled = image.resize(size, resample=Image.LANCZOS)
        scaled.save(output / MULTISCALE / f"{path.stem}T{idx}.png", compress_level=compression_level)
        written += extract(scaled, f"{path.stem}T{idx}", output / MULTISCALE_SUB, crop_size, step, thresh_size,
                           compression_level)
    return written


def find_images(inputs: Sequence[Path]) -> list[Path]:
    images = [p for folder in inputs for p in sorted(Path(folder).iterdir()) if p.suffix.lower() in EXTENSIONS]
    stems = [p.stem for p in images]
    clashes = sorted({s for s in stems if stems.count(s) > 1})
    if clashes:
        raise SystemExit(f"prepare_df2k: several input images are named {clashes[:5]}: their outputs would "
                         f"overwrite each other. Rename them or prepare the folders separately.")
    if not images:
        raise SystemExit(f"prepare_df2k: no images in {[str(p) for p in inputs]}.")
    return images


def prepare(inputs: Sequence[Path], output: Path, scales: Sequence[float] = SCALES, shortest_edge: int = SHORTEST_EDGE,
            crop_size: int = CROP_SIZE, step: int = STEP, thresh_size: int = THRESH_SIZE,
            compression_level: int = COMPRESSION_LEVEL, workers: int = 1) -> Path:
    """All three steps; returns the meta-info file."""
    images = find_images(inputs)
    for name in (MULTISCALE, HR_SUB, MULTISCALE_SUB):
        folder = output / name
        if folder.exists() and any(folder.iterdir()):
            raise SystemExit(f"prepare_df2k: {folder} is not empty; remove it or choose another --output.")
        folder.mkdir(parents=True, exist_ok=True)
    job = partial(prepare_one, output=output, scales=scales, shortest_edge=shortest_edge, crop_size=crop_size,
                  step=step, thresh_size=thresh_size, compression_level=compression_level)
    if workers > 1:
        with ProcessPoolExecutor(workers) as pool:
            written = [p for paths in pool.map(job, images, chunksize=4) for p in paths]
    else:
        written = [p for image in images for p in job(image)]
    meta = output / META_INFO
    meta.parent.mkdir(parents=True, exist_ok=True)
    meta.write_text("".join(f"{p.relative_to(output).as_posix()}\n" for p in sorted(written)))
    return meta


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--input", type=Path, nargs="+", required=True, help="folders of HR images (DIV2K, Flickr2K)")
    parser.add_argument("--output", type=Path, required=True, help="the DF2K root to write")
    parser.add_argument("--scales", type=float, nargs="+", default=list(SCALES))
    parser.add_argument("--shortest-edge", type=int, default=SHORTEST_EDGE)
    parser.add_argument("--crop-size", type=int, default=CROP_SIZE)
    parser.add_argument("--step", type=int, default=STEP)
    parser.add_argument("--thresh-size", type=int, default=THRESH_SIZE)
    parser.add_argument("--compression-level", type=int, default=COMPRESSION_LEVEL)
    parser.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1))
    args = parser.parse_args(argv)
    meta = prepare(args.input, args.output, args.scales, args.shortest_edge, args.crop_size, args.step,
                   args.thresh_size, args.compression_level, args.workers)
    count = len(meta.read_text().splitlines())
    print(f"{count} sub-images of {args.crop_size}x{args.crop_size}; list: {meta}")


if __name__ == "__main__":
    sys.exit(main())
