"""The expected time of a restoration, shown before Restore is pressed.

A restoration costs its network evaluations (NFEs): the samplers' own arithmetic is under 1% of an NFE here
(README benchmarks). So seconds = NFEs x seconds per NFE at the image's size. The seconds per NFE of each model
(and DiffPIR task) are measured once, when the page first asks for them (so on first use, not at start): the
model restores a small random image at 2 steps at two sizes (64² and 128² output pixels, after a warm-up), which
gives a fixed cost per NFE and a cost per pixel. Tiling runs the network on every tile, so a tiled NFE costs the
tiles' pixels (overlaps counted twice).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

SIDES = (64, 128)  # output sides of the two timed runs: cheap even for paper-size networks on a CPU


@dataclass(frozen=True)
class Timing:
    fixed: float      # seconds per NFE whatever the size (framework overhead, small layers)
    per_pixel: float  # seconds per NFE per output pixel
    scale: int        # output side / input side (super-resolution)

    def per_nfe(self, pixels: float) -> float:
        return self.fixed + self.per_pixel * pixels


def measure(module, device: torch.device, precision: str = "32", task: str | None = None) -> Timing:
    """Time an NFE of `module`'s restorer (its own sampler at 2 steps, DiffPIR's least, where it takes steps) at
    SIDES."""
    import inspect

    from webui.session import Options, restore_image

    steps = 2 if "steps" in inspect.signature(module.restorer).parameters else None

    def once(side: int) -> tuple[float, int]:
        image = np.random.default_rng(0).integers(0, 256, (side, side, 3), dtype=np.uint8)
        mask = torch.ones(1, 1, side, side)
        mask[..., side // 4: side // 2, side // 4: side // 2] = 0
        conditions = {"mask": mask} if task in (None, "inpainting") else {}  # kept only where the model takes one
        result = restore_image(module, image, "timing.png", Options(steps=steps, task=task, conditions=conditions),
                               device=device, precision=precision, progress=False)
        return result.seconds / max(result.nfe, 1), result.image.shape[0] // side

    _, scale = once(16)  # warm-up (allocations, kernels chosen on first use); gives the output scale
    small, large = (once(max(8, side // scale))[0] for side in SIDES)
    per_pixel = max(0.0, (large - small) / (SIDES[1] ** 2 - SIDES[0] ** 2))
    return Timing(max(0.0, small - per_pixel * SIDES[0] ** 2), per_pixel, scale)


def network_pixels(height: int, width: int, scale: int = 1, tile: int | None = None, overlap: int = 32) -> int:
    """Output pixels the network sees per NFE for an input of height x width (all its tiles when tiled)."""
    from core.tiling import tile_starts  # the tiler's own layout, so the count is the tiles it will run

    if not tile or (tile >= height and tile >= width):
        return height * width * scale * scale
    overlap = min(int(overlap), tile - 1)
    tiles = len(tile_starts(height, min(tile, height), overlap)) * len(tile_starts(width, min(tile, width), overlap))
    return tiles * min(tile, height) * min(tile, width) * scale * scale


def expected_seconds(timing: Timing, nfe: int, sizes: list[tuple[int, int]], tile: int | None = None,
                     overlap: int | None = None) -> float:
    """Seconds to restore images of `sizes` (height, width) at `nfe` NFEs each."""
    overlap = 32 if overlap is None else overlap
    return sum(nfe * timing.per_nfe(network_pixels(h, w, timing.scale, tile, overlap)) for h, w in sizes)


def say(seconds: float) -> str:
    """A duration as a person reads it: 0.4 s, 12 s, 3.5 min."""
    if seconds < 10:
        return f"{max(seconds, 0.1):.1f} s"
    if seconds < 120:
        return f"{math.ceil(seconds)} s"
    return f"{seconds / 60:.1f} min"
