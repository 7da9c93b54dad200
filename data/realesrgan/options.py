"""The options of Real-ESRGAN's two-stage degradation model, named as in the official option files.

Defaults are DiffIR-RealSR's (Zj-BinXia/DiffIR @ 293f86c, DiffIR-RealSR/options/train_DiffIRS{1,2}_x{1,2,4}.yml):
the degradation values are the same in every one of its option files (x1, x2, x4; S1, S2, S2-GAN), only `scale`
differs, and `gt_usm` is False for S1/S2 (the GAN files instead set l1_gt_usm / percep_gt_usm, False in
train_DiffIRS2_GAN_x*.yml and True in the *_V2.yml ones). Real-ESRGAN's own train_realesrnet_x4plus.yml has the
same values with gt_usm True.

Two settings are hard-coded in the official code rather than read from the options: the blur kernel sizes
(7, 9, ..., 21, basicsr/data/realesrgan_dataset.py) and the 50/50 choice between the two orders of the final
step (feed_data). They are options here with those values.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

from core.errors import ConfigError

KERNEL_TYPES = ("iso", "aniso", "generalized_iso", "generalized_aniso", "plateau_iso", "plateau_aniso")
RESIZE_MODES = ("area", "bilinear", "bicubic")  # drawn uniformly at every resize, as feed_data does
OFFICIAL_KERNEL_PROB = (0.45, 0.25, 0.12, 0.03, 0.12, 0.03)

Range = tuple[float, float]


@dataclass(frozen=True)
class BlurOptions:
    """One stage's blur kernel: a sinc with `sinc_prob`, else one of `kernel_list` drawn with `kernel_prob`."""

    kernel_list: tuple[str, ...]
    kernel_prob: tuple[float, ...]
    sinc_prob: float
    blur_sigma: Range
    betag_range: Range
    betap_range: Range
    kernel_range: tuple[int, ...]


@dataclass(frozen=True)
class StageOptions:
    """One stage's resize, noise and JPEG settings (blur_prob is 1 for the first stage)."""

    blur: BlurOptions
    blur_prob: float
    resize_prob: tuple[float, float, float]  # up, down, keep
    resize_range: Range
    gaussian_noise_prob: float  # else Poisson noise
    noise_range: Range  # Gaussian sigma on the 0-255 scale
    poisson_scale_range: Range
    gray_noise_prob: float
    jpeg_range: Range


@dataclass(frozen=True)
class DegradationOptions:
    """Every option of the degradation, flat, with the official names (first stage unsuffixed, second stage
    suffixed 2). Build it from a config mapping with `DegradationOptions.from_config`."""

    # the first degradation
    kernel_list: tuple[str, ...] = KERNEL_TYPES
    kernel_prob: tuple[float, ...] = OFFICIAL_KERNEL_PROB
    sinc_prob: float = 0.1
    blur_sigma: Range = (0.2, 3.0)
    betag_range: Range = (0.5, 4.0)
    betap_range: Range = (1.0, 2.0)
    resize_prob: tuple[float, float, float] = (0.2, 0.7, 0.1)
    resize_range: Range = (0.15, 1.5)
    gaussian_noise_prob: float = 0.5
    noise_range: Range = (1.0, 30.0)
    poisson_scale_range: Range = (0.05, 3.0)
    gray_noise_prob: float = 0.4
    jpeg_range: Range = (30.0, 95.0)
    # the second degradation
    second_blur_prob: float = 0.8
    kernel_list2: tuple[str, ...] = KERNEL_TYPES
    kernel_prob2: tuple[float, ...] = OFFICIAL_KERNEL_PROB
    sinc_prob2: float = 0.1
    blur_sigma2: Range = (0.2, 1.5)
    betag_range2: Range = (0.5, 4.0)
    betap_range2: Range = (1.0, 2.0)
    resize_prob2: tuple[float, float, float] = (0.3, 0.4, 0.3)
    resize_range2: Range = (0.3, 1.2)
    gaussian_noise_prob2: float = 0.5
    noise_range2: Range = (1.0, 25.0)
    poisson_scale_range2: Range = (0.05, 2.5)
    gray_noise_prob2: float = 0.4
    jpeg_range2: Range = (30.0, 95.0)
    # the final step: [resize back + sinc] then JPEG, or JPEG then [resize back + sinc]
    final_sinc_prob: float = 0.8
    final_resize_first_prob: float = 0.5  # hard-coded 0.5 in feed_data
    # JPEG: False quantizes with the tables transposed, as the official DiffJPEG does (data.realesrgan.jpeg)
    jpeg_standard_tables: bool = False
    # blur kernel sizes (hard-coded 7..21 odd in the official dataset); kernels are zero-padded to the largest
    kernel_range: tuple[int, ...] = (7, 9, 11, 13, 15, 17, 19, 21)
    # targets
    gt_usm: bool = False  # USM-sharpen the GT first: the LQ is made from it and it is the target
    gt_size: int | None = 256  # paired random crop of the HR target after degrading (None: keep the size)
    # the official training-pair pool (180 there); read by the recipe (data.realesrgan.pool), not by degrade().
    # 0 (off) keeps every batch a function of its own samples: see pool.py for the trade-off
    queue_size: int = 0

    def __post_init__(self) -> None:
        for f in fields(self):  # config lists (OmegaConf ListConfig, lists) become tuples: hashable, frozen
            value = getattr(self, f.name)
            if isinstance(value, Sequence) and not isinstance(value, str):
                object.__setattr__(self, f.name, tuple(value))
        self._validate()

    @classmethod
    def from_config(cls, config: Mapping[str, Any] | None = None, **overrides: Any) -> DegradationOptions:
        """Options from a mapping with the official key names (unknown keys are an error, naming them)."""
        values = {**dict(config or {}), **overrides}
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"Unknown Real-ESRGAN degradation option(s) {unknown}; known: {sorted(known)}.")
        return cls(**values)

    def stage(self, which: int) -> StageOptions:
        """The first (1) or second (2) stage's settings."""
        s = "" if which == 1 else "2"
        blur = BlurOptions(
            kernel_list=getattr(self, f"kernel_list{s}"), kernel_prob=getattr(self, f"kernel_prob{s}"),
            sinc_prob=getattr(self, f"sinc_prob{s}"), blur_sigma=getattr(self, f"blur_sigma{s}"),
            betag_range=getattr(self, f"betag_range{s}"), betap_range=getattr(self, f"betap_range{s}"),
            kernel_range=self.kernel_range)
        return StageOptions(
            blur=blur, blur_prob=1.0 if which == 1 else self.second_blur_prob,
            resize_prob=getattr(self, f"resize_prob{s}"), resize_range=getattr(self, f"resize_range{s}"),
            gaussian_noise_prob=getattr(self, f"gaussian_noise_prob{s}"), noise_range=getattr(self, f"noise_range{s}"),
            poisson_scale_range=getattr(self, f"poisson_scale_range{s}"),
            gray_noise_prob=getattr(self, f"gray_noise_prob{s}"), jpeg_range=getattr(self, f"jpeg_range{s}"))

    @property
    def max_kernel_size(self) -> int:
        return max(self.kernel_range)

    # -- checks: one clear line per bad value ------------------------------------------------------------------
    def _validate(self) -> None:
        for s in ("", "2"):
            kinds, probs = getattr(self, f"kernel_list{s}"), getattr(self, f"kernel_prob{s}")
            bad = [k for k in kinds if k not in KERNEL_TYPES]
            if bad:
                raise ConfigError(f"degradation.kernel_list{s} has unknown kernel(s) {bad}; use {list(KERNEL_TYPES)}.")
            if len(kinds) != len(probs) or not kinds:
                raise ConfigError(f"degradation.kernel_list{s} ({len(kinds)} kinds) and kernel_prob{s} "
                                  f"({len(probs)} values) must have the same, non-zero length.")
            _weights(f"kernel_prob{s}", probs)
            _weights(f"resize_prob{s}", getattr(self, f"resize_prob{s}"), length=3)
            for name in ("sinc_prob", "gaussian_noise_prob", "gray_noise_prob"):
                _probability(f"{name}{s}", getattr(self, f"{name}{s}"))
            _range(f"blur_sigma{s}", getattr(self, f"blur_sigma{s}"), low=0.0, strict_low=True)
            # generalized / plateau shapes draw beta from [low, 1] or [1, high] (official): 1 must be inside
            for name in ("betag_range", "betap_range"):
                low, high = _range(f"{name}{s}", getattr(self, f"{name}{s}"), low=0.0, strict_low=True)
                if not low <= 1.0 <= high:
                    raise ConfigError(f"degradation.{name}{s}={[low, high]} must contain 1 (beta is drawn from "
                                      f"[low, 1] or [1, high]).")
            low, high = _range(f"resize_range{s}", getattr(self, f"resize_range{s}"), low=0.0, strict_low=True)
            if not low <= 1.0 <= high:
                raise ConfigError(f"degradation.resize_range{s}={[low, high]} must contain 1 (down: [low, 1], "
                                  f"up: [1, high]).")
            _range(f"noise_range{s}", getattr(self, f"noise_range{s}"), low=0.0)
            _range(f"poisson_scale_range{s}", getattr(self, f"poisson_scale_range{s}"), low=0.0)
            low, _ = _range(f"jpeg_range{s}", getattr(self, f"jpeg_range{s}"), low=1.0, high=100.0)
            if low >= 100:  # quality 100 scales the tables by 0: the codec would divide by zero
                raise ConfigError(f"degradation.jpeg_range{s}: the low quality must be below 100.")
        for name in ("second_blur_prob", "final_sinc_prob", "final_resize_first_prob"):
            _probability(name, getattr(self, name))
        sizes = self.kernel_range
        if not sizes or any(int(k) != k or k < 3 or k % 2 == 0 for k in sizes):
            raise ConfigError(f"degradation.kernel_range={list(sizes)} must list odd kernel sizes >= 3.")
        if self.gt_size is not None and int(self.gt_size) < 1:
            raise ConfigError(f"degradation.gt_size={self.gt_size} must be a positive patch size or null.")
        if int(self.queue_size) < 0:
            raise ConfigError(f"degradation.queue_size={self.queue_size} must be 0 (no pool) or a pool size.")


def _probability(name: str, value: float) -> None:
    if not 0.0 <= float(value) <= 1.0:
        raise ConfigError(f"degradation.{name}={value} is not a probability in [0, 1].")


def _weights(name: str, values: Sequence[float], length: int | None = None) -> None:
    if length is not None and len(values) != length:
        raise ConfigError(f"degradation.{name}={list(values)} needs {length} weights.")
    if any(float(v) < 0 for v in values) or not math.isfinite(sum(values)) or sum(values) <= 0:
        raise ConfigError(f"degradation.{name}={list(values)} must be non-negative weights with a positive sum.")


def _range(name: str, values: Sequence[float], low: float | None = None, high: float | None = None,
           strict_low: bool = False) -> tuple[float, float]:
    if len(values) != 2 or float(values[0]) > float(values[1]):
        raise ConfigError(f"degradation.{name}={list(values)} must be a [low, high] pair with low <= high.")
    lo, hi = float(values[0]), float(values[1])
    if low is not None and (lo < low or (strict_low and lo <= low)):
        raise ConfigError(f"degradation.{name}={[lo, hi]}: low must be {'>' if strict_low else '>='} {low}.")
    if high is not None and hi > high:
        raise ConfigError(f"degradation.{name}={[lo, hi]}: high must be <= {high}.")
    return lo, hi


OFFICIAL = DegradationOptions()  # DiffIR-RealSR's values (S1/S2: gt_usm False), without the pool
