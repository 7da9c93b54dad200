"""One press of the Restore button, without Gradio: uploaded files + options -> restored PNGs on disk and a table.

Each input is read (webui.uploads), given its mask or kernel, restored (webui.session), and written with
core.io.write_image, the writer restore.py uses, under the name restore.py would give it (<stem>.png). A bad
file among several is reported through `warn` and skipped; a single bad file is an InputError.
"""

from __future__ import annotations

import math
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path

import numpy as np
import torch

from webui.session import Options, Result, restore_image
from webui.uploads import InputError, mask_from_drawing, read_kernel_upload, read_mask_upload, read_upload

GENERATED_MASKS = ("box", "strokes", "pixels")  # data.masks.MASK_KINDS: drawn by the restorer's own code
MASK_SOURCES = (*GENERATED_MASKS, "drawn", "file")


@dataclass
class Settings:
    """The app-wide settings of configs/app.yaml that a run needs."""

    device_name: torch.device | str      # auto | cpu | cuda:N, resolved when first used (core.loading, which
    out_dir: Path                         # picks it, imports Lightning: seconds that the page's start-up saves)
    precision: str = "32"
    max_pixels: int | None = None        # refused above this without tiling
    max_pixels_tiled: int | None = None  # and above this with it
    convention: dict = field(default_factory=dict)  # y_channel / crop_border for PSNR and SSIM

    @cached_property
    def device(self) -> torch.device:
        from core.loading import pick_device

        return pick_device(str(self.device_name))


@dataclass
class MaskChoice:
    """Where an inpainting mask comes from: a generated kind, the page's drawing, or a file."""

    source: str = "box"
    drawing: dict | None = None
    file: str | None = None


VIEW_SIDE = 256  # smaller results are shown enlarged (nearest neighbour), so 32x32 faces are visible


@dataclass
class Output:
    name: str
    after: Path                # the restored PNG (restore.py's pixels)
    view: tuple[Path, Path]    # before / after for the page: the input as the model took it, at the result's size
    result: Result


def run_job(module, files: list[str], options: Options, settings: Settings, *, gt_files: list[str] | None = None,
            mask: MaskChoice | None = None, kernel_file: str | None = None, stop: threading.Event | None = None,
            convention: dict | None = None, warn: Callable[[str], None] = print,
            on_image: Callable[[int, int, str], None] | None = None) -> list[Output]:
    """Restore `files` with `module`; `convention` is the model's metric convention (the app's settings win)."""
    if not files:
        raise InputError("no image: upload one or more images, or pick a demo image")
    job = settings.out_dir / uuid.uuid4().hex[:12]
    truths = _ground_truths(files, gt_files or [])
    kernel = read_kernel_upload(kernel_file) if kernel_file and _family(options.task) == "deblur" else None
    limit = settings.max_pixels_tiled if options.tile else settings.max_pixels
    outputs: list[Output] = []
    for i, path in enumerate(files):
        name = Path(path).name
        if on_image is not None:
            on_image(i, len(files), name)
        try:
            image = read_upload(path, name, limit, tiled=bool(options.tile))
            conditions = {"kernel": kernel} if kernel is not None else {}
            if _family(options.task) == "inpainting":
                conditions["mask"] = _mask(mask or MaskChoice(), image.shape[:2])
        except InputError as err:
            if len(files) == 1:
                raise
            warn(f"skipped: {err}")
            continue
        gt = None
        try:  # a bad ground truth loses the scores, not the restoration
            gt = read_upload(truths[name], Path(truths[name]).name) if name in truths else None
        except InputError as err:
            warn(f"no PSNR/SSIM for {name}: {err}")
        result = restore_image(module, image, name, replace(options, conditions=conditions), device=settings.device,
                               precision=settings.precision, gt=gt, stop=stop,
                               convention={**(convention or {}), **settings.convention})
        for message in result.warnings:
            warn(message)
        outputs.append(_write(job, name, image, result))
    if not outputs:
        raise InputError("none of the uploaded files could be restored (see the messages above)")
    return outputs


def table(outputs: list[Output]) -> str:
    """A Markdown table of the numbers of a run (PSNR/SSIM as input → restored when a ground truth was given), and
    the model line."""
    rows = ["| image | size | NFEs | time | PSNR (dB) | SSIM |", "|---|---|---|---|---|---|"]
    for out in outputs:
        s, (h, w) = out.result.scores, out.result.image.shape[:2]
        psnr, ssim = _pair(s.get("psnr_input"), s.get("psnr"), 2), _pair(s.get("ssim_input"), s.get("ssim"), 4)
        rows.append(f"| {out.name} | {w}x{h} | {out.result.nfe} | {out.result.seconds:.1f} s | {psnr} | {ssim} |")
    return "\n".join(rows) + f"\n\n{outputs[0].result.description}" if outputs else ""


def numbers(outputs: list[Output]) -> dict:
    """The numbers of `table` as a dict (the API's answer): the restorer line and one entry per image."""
    images = [{"name": o.name, "file": o.after.name, "width": o.result.image.shape[1],
               "height": o.result.image.shape[0], "nfe": o.result.nfe, "seconds": round(o.result.seconds, 3),
               **{k: round(v, 4) for k, v in o.result.scores.items() if math.isfinite(v)}} for o in outputs]
    return {"restorer": outputs[0].result.description if outputs else "", "images": images}


def mask_preview(path: str, choice: MaskChoice, max_pixels: int | None = None) -> np.ndarray:
    """The first image with the pixels to fill in magenta: the mask a run would use, shown before it runs
    (enlarged like the results, so a 32x32 face is visible)."""
    image = read_upload(path, max_pixels=max_pixels, tiled=True)
    known = _mask(choice, image.shape[:2])[0, 0].numpy() > 0.5
    shown = np.where(known[..., None], image, np.array([255, 0, 255], np.uint8))
    height, width = shown.shape[:2]
    zoom = max(1, -(-VIEW_SIDE // max(height, width)))
    return np.asarray(_enlarged(shown.astype(np.uint8), (width * zoom, height * zoom)))


def _pair(before: float | None, after: float | None, digits: int) -> str:
    if after is None:
        return "—"  # no ground truth given
    shown = f"{after:.{digits}f}"
    return f"{before:.{digits}f} → {shown}" if before is not None and math.isfinite(before) else shown


def _family(task: str | None) -> str | None:
    return None if task is None else "sr" if task.startswith("sr_") else task.split("_")[0]


def _ground_truths(files: list[str], gt_files: list[str]) -> dict[str, str]:
    """input name -> ground-truth file: the one GT of a single input, else the GT of the same file name."""
    if len(files) == 1 and len(gt_files) == 1:
        return {Path(files[0]).name: gt_files[0]}
    by_name = {Path(g).name: g for g in gt_files}
    by_stem = {Path(g).stem: g for g in gt_files}
    return {Path(f).name: by_name.get(Path(f).name) or by_stem[Path(f).stem] for f in files
            if Path(f).name in by_name or Path(f).stem in by_stem}


def _mask(choice: MaskChoice, shape: tuple[int, int]) -> torch.Tensor:
    """The known-pixel mask (1 x 1 x H x W) of an image of `shape`."""
    if choice.source in GENERATED_MASKS:
        from diffpir.tasks import generated_mask

        # what the restorer draws itself for restore.py mask=box|strokes|pixels (seed 0)
        return generated_mask(choice.source, shape[0], shape[1], 0)[None]
    if choice.source == "drawn":
        return mask_from_drawing(choice.drawing, shape)
    if choice.source == "file":
        if not choice.file:
            raise InputError("mask source 'file' but no mask uploaded: upload a mask (white = known pixel)")
        return read_mask_upload(choice.file, shape)
    raise InputError(f"unknown mask source {choice.source!r}: use one of {', '.join(MASK_SOURCES)}")


def _write(job: Path, name: str, image: np.ndarray, result: Result) -> Output:
    from core.io import write_image

    stem, n = Path(name).stem, 1
    while (job / f"{stem}.png").exists():  # two uploads of the same name: keep both
        n += 1
        stem = f"{Path(name).stem}_{n}"
    after = job / f"{stem}.png"
    write_image(after, result.image)  # restore.py's writer: the same PNG pixels
    height, width = result.image.shape[:2]
    zoom = max(1, -(-VIEW_SIDE // max(height, width)))
    views: list[Path] = []
    (job / "view").mkdir(exist_ok=True)
    for kind, pixels in (("before", result.measured if result.measured is not None else image),
                         ("after", result.image)):
        views.append(job / "view" / f"{stem}_{kind}.png")
        _enlarged(pixels, (width * zoom, height * zoom)).save(views[-1])
    return Output(name, after, (views[0], views[1]), result)


def _enlarged(pixels: np.ndarray, size: tuple[int, int]):
    """A PIL image of `pixels` at `size` (width, height), nearest neighbour: the pixels stay visible as they are."""
    from PIL import Image

    shown = Image.fromarray(pixels)
    if shown.size != size:  # super-resolution inputs and small images
        shown = shown.resize(size, Image.NEAREST)
    return shown
