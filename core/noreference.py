"""NIQE, the no-reference score of restorations without ground truth, as the papers compute it.

NIQE (Mittal, Soundararajan and Bovik, "Making a Completely Blind Image Quality Analyzer", 2012) follows the
official MATLAB release (``computequality.m``) in float64, with BasicSR's input convention
(``basicsr.metrics.calculate_niqe``, the one DiffIR-RealSR, Real-ESRGAN and most SR papers report):

* the 8-bit RGB image becomes the Y of MATLAB's ``rgb2ycbcr`` (``core.metrics.rgb_to_y``), ``crop_border``
  pixels are dropped on every side and Y is rounded to integers (as MATLAB's uint8 ``rgb2ycbcr`` output);
* Y is cut to whole 96x96 blocks; at two scales (the image, then ``imresize(·, 0.5)``) the MSCN coefficients
  ``(I - mu) / (sigma + 1)`` (7x7 Gaussian, sigma 7/6, replicate border) give 18 AGGD features per block;
* the score is the Mahalanobis-like distance between the blocks' Gaussian (NaN-aware mean, covariance over the
  complete rows) and the pristine model: ``sqrt(d' pinv((C_pris + C) / 2) d)``. Lower is better.

Flat 7x7 neighbourhoods get an MSCN value of exactly 0 (exact arithmetic; MATLAB's filter leaves +-1e-14 whose
signs depend on its summation order). With that, BasicSR's MATLAB R2021a value for its baboon.png (5.72957338)
is matched to 5e-7, and the release's value for pyiqa's calibration image I04 to 1e-12; on images with flat
areas MATLAB's own rounding moves its score by up to ~0.6% (tests/unit/test_noreference.py).

The pristine model (mean 1x36, covariance 36x36, fitted by the NIQE authors on their pristine images) is data,
not code: it is read from ``niqe_pris_params.npz`` as shipped inside an installed package (BasicSR's or
MMagic's; both Apache-2.0, the same file), never downloaded. Without it NIQE is skipped with one warning.
Install one with ``--no-deps``: nothing of either is imported, and their own dependencies are heavy.
"""

from __future__ import annotations

import importlib.util
import logging
import math
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from scipy.ndimage import correlate1d
from scipy.special import gamma
from torch import Tensor

from core.metrics import quantize_8bit, rgb_to_y

log = logging.getLogger(__name__)

NIQE_BLOCK = 96  # block side of the official model (no overlap)
NIQE_PARAMS_FILE = "niqe_pris_params.npz"
# (package, folder inside it) of installed packages that ship the pristine model; found without importing them.
NIQE_PARAMS_SOURCES = (("basicsr", "metrics"), ("mmagic", "evaluation/metrics"))
NIQE_INSTALL_HINT = "pip install --no-deps mmagic==1.2.0 (or basicsr==1.4.2; only its data file is read)"

# The AGGD shape grid of estimateaggdparam.m: gam = 0.2:0.001:10 and its ratio r(g) = G(2/g)^2 / (G(1/g) G(3/g)).
_GAM = 0.2 + 0.001 * np.arange(9801)
_R_GAM = gamma(2 / _GAM) ** 2 / (gamma(1 / _GAM) * gamma(3 / _GAM))
# computefeature.m's circshift offsets within each block: horizontal, vertical and both diagonal neighbours.
_SHIFTS = ((0, 1), (1, 0), (1, 1), (1, -1))

# |I - mu| below this is rounding error (~1e-12 on 0..255 values), far below any true deviation.
_FLAT = 1e-9

_WARNED: set[str] = set()


# ----------------------------------------------------------------------------------------------------
# The pristine model
# ----------------------------------------------------------------------------------------------------


def niqe_params_path() -> Path | None:
    """The first ``niqe_pris_params.npz`` among the installed packages of ``NIQE_PARAMS_SOURCES``, or None."""
    for package, folder in NIQE_PARAMS_SOURCES:
        spec = importlib.util.find_spec(package)  # a top-level name: located, not imported (BasicSR can't be)
        for root in (spec.submodule_search_locations or []) if spec else []:
            path = Path(root) / folder / NIQE_PARAMS_FILE
            if path.is_file():
                return path
    return None


@lru_cache(maxsize=4)
def _read_params(path: str) -> tuple[np.ndarray, np.ndarray]:
    with np.load(path) as data:
        mu, cov = data["mu_pris_param"].astype(np.float64), data["cov_pris_param"].astype(np.float64)
    if mu.size != 36 or cov.shape != (36, 36):
        raise ValueError(f"{path}: expected a 1x36 mean and a 36x36 covariance, got {mu.shape} and {cov.shape}")
    return mu.reshape(36), cov


def load_niqe_params(path: str | Path | None = None) -> tuple[np.ndarray, np.ndarray] | None:
    """(mu (36,), cov (36, 36)) of the pristine model from ``path`` or an installed package; None (one warning)."""
    found = Path(path) if path is not None else niqe_params_path()
    if found is None or not found.is_file():
        where = str(found) if found is not None else f"{NIQE_PARAMS_FILE} in any of " + ", ".join(
            f"{p}/{f}" for p, f in NIQE_PARAMS_SOURCES)
        if "niqe" not in _WARNED:
            _WARNED.add("niqe")
            log.warning(f"NIQE skipped: its pristine model {where} is missing; {NIQE_INSTALL_HINT} to enable it.")
        return None
    return _read_params(str(found))


def niqe_available() -> bool:
    return niqe_params_path() is not None


# ----------------------------------------------------------------------------------------------------
# Features (float64, as MATLAB)
# ----------------------------------------------------------------------------------------------------


def gaussian_window() -> np.ndarray:
    """MATLAB's ``fspecial('gaussian', 7, 7/6)``, normalised to sum 1 (7x7)."""
    g = _gaussian_1d()
    return np.outer(g, g)


def _gaussian_1d() -> np.ndarray:
    x = np.arange(-3, 4, dtype=np.float64)
    g = np.exp(-(x**2) / (2 * (7 / 6) ** 2))
    return g / g.sum()  # the 2-D window is the outer product of this, so its sum is 1 too


def mscn(img: np.ndarray) -> np.ndarray:
    """Mean-subtracted contrast-normalised coefficients: imfilter(..., 'replicate') with the 7x7 window."""
    g = _gaussian_1d()

    def blur(x: np.ndarray) -> np.ndarray:  # separable window: two 1-D passes; 'nearest' is MATLAB's replicate
        return correlate1d(correlate1d(x, g, axis=0, mode="nearest"), g, axis=1, mode="nearest")

    mu = blur(img)
    sigma = np.sqrt(np.abs(blur(img * img) - mu * mu))
    centred = img - mu
    # A flat neighbourhood deviates by exactly 0; rounding leaves +-1e-14 there, whose arbitrary signs would move
    # those pixels between the AGGD's left and right halves (1.4e-4 on baboon's NIQE).
    centred[np.abs(centred) < _FLAT] = 0.0
    return centred / (sigma + 1.0)


def aggd_params(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """estimateaggdparam.m on each row of x (B, n): (alpha, beta_left, beta_right), each (B,).

    A row without negative (or positive) values gives NaN betas and alpha 0.2, as MATLAB (whose ``min``
    skips the NaN differences and so returns the first grid point); numpy's argmin picks that index too.
    """
    neg, pos = x < 0, x > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        left = np.sqrt((x * x * neg).sum(1) / neg.sum(1))
        right = np.sqrt((x * x * pos).sum(1) / pos.sum(1))
        ratio = left / right
        rhat = np.abs(x).mean(1) ** 2 / (x * x).mean(1)
        rhat_norm = rhat * (ratio**3 + 1) * (ratio + 1) / (ratio**2 + 1) ** 2
    alpha = _GAM[np.argmin((_R_GAM[None, :] - rhat_norm[:, None]) ** 2, axis=1)]
    scale = np.sqrt(gamma(1 / alpha) / gamma(3 / alpha))
    return alpha, left * scale, right * scale


def block_features(coeffs: np.ndarray, block: int) -> np.ndarray:
    """computefeature.m on every ``block`` x ``block`` tile of an MSCN map whose sides are multiples: (B, 18)."""
    h, w = coeffs.shape
    tiles = coeffs.reshape(h // block, block, w // block, block).transpose(0, 2, 1, 3).reshape(-1, block, block)
    alpha, left, right = aggd_params(tiles.reshape(len(tiles), -1))
    feats = [alpha, (left + right) / 2]
    for shift in _SHIFTS:
        pair = tiles * np.roll(tiles, shift, axis=(1, 2))
        alpha, left, right = aggd_params(pair.reshape(len(tiles), -1))
        feats += [alpha, (right - left) * gamma(2 / alpha) / gamma(1 / alpha), left, right]
    return np.stack(feats, axis=1)


def niqe(img: np.ndarray, mu_pris: np.ndarray, cov_pris: np.ndarray, block: int = NIQE_BLOCK) -> float:
    """NIQE of a gray / Y image (H, W) in 0..255 (computequality.m with no overlap); NaN under two blocks."""
    from data.resize import imresize

    img = np.asarray(img, dtype=np.float64)
    if img.ndim != 2:
        raise ValueError(f"niqe expects an (H, W) gray or Y image, got shape {img.shape}")
    rows, cols = img.shape[0] // block, img.shape[1] // block
    if rows * cols == 0:
        raise ValueError(f"NIQE needs at least {block}x{block} pixels (after crop_border), got {img.shape}")
    img = img[: rows * block, : cols * block]
    feats = []
    for scale in (1, 2):
        feats.append(block_features(mscn(img), block // scale))
        if scale == 1:
            img = imresize(img, 0.5)  # MATLAB's bicubic with antialiasing, unrounded
    feats = np.concatenate(feats, axis=1)
    complete = feats[~np.isnan(feats).any(axis=1)]
    if len(complete) < 2:  # no covariance from fewer than two blocks
        return math.nan
    mu = np.nanmean(feats, axis=0)  # nanmean / nancov: the MATLAB release's
    cov = np.cov(complete, rowvar=False)
    # MATLAB's pinv tolerance: max(size) * eps times the largest singular value
    inv = np.linalg.pinv((cov_pris + cov) / 2, rcond=36 * np.finfo(np.float64).eps)
    d = mu_pris - mu
    return float(np.sqrt(d @ inv @ d))


# ----------------------------------------------------------------------------------------------------
# Public entry points
# ----------------------------------------------------------------------------------------------------


def calculate_niqe(img: np.ndarray, crop_border: int = 0, params: tuple[np.ndarray, np.ndarray] | None = None
                   ) -> float:
    """NIQE of one uint8 HxWx3 RGB (or HxW gray) image, as BasicSR's ``calculate_niqe(..., convert_to='y')``.

    ``params`` is (mu, cov) of the pristine model (default: ``load_niqe_params()``, which must find it).
    """
    if params is None:
        params = load_niqe_params()
        if params is None:
            raise FileNotFoundError(f"NIQE's pristine model {NIQE_PARAMS_FILE} was not found: {NIQE_INSTALL_HINT}")
    arr = np.asarray(img)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    y = rgb_to_y(arr)[..., 0] if arr.ndim == 3 else arr.astype(np.float32)
    if crop_border < 0:
        raise ValueError(f"crop_border must be >= 0, got {crop_border}")
    if crop_border > 0:
        y = y[crop_border:-crop_border, crop_border:-crop_border]
    return niqe(np.round(y).astype(np.float64), *params)  # rounded as MATLAB's uint8 rgb2ycbcr


@torch.no_grad()
def niqe_batch(restored: Tensor, crop_border: int = 0, params: tuple[np.ndarray, np.ndarray] | None = None
               ) -> Tensor | None:
    """Per-image NIQE (N,) float64 of a float NCHW batch in [0, 1], scored on its 8-bit version (the saved PNG).

    None (after one warning) when the pristine model is not installed; NaN (one warning) for images smaller than
    one 96x96 block after ``crop_border`` (the 32x32 demo faces), where NIQE is undefined.
    """
    params = params if params is not None else load_niqe_params()
    if params is None:
        return None
    if min(restored.shape[-2:]) - 2 * crop_border < NIQE_BLOCK:
        if "small" not in _WARNED:
            _WARNED.add("small")
            log.warning(f"NIQE left out: {tuple(restored.shape[-2:])} images are smaller than {NIQE_BLOCK}x"
                        f"{NIQE_BLOCK} pixels after crop_border={crop_border}")
        return torch.full((restored.shape[0],), math.nan, dtype=torch.float64)
    images = quantize_8bit(restored).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    return torch.tensor([calculate_niqe(im, crop_border, params) for im in images], dtype=torch.float64)


def score_folder(folder: str | Path, crop_border: int = 0) -> tuple[list[dict], dict]:
    """NIQE of every image of ``folder`` alone (evaluate.py restored=DIR without gt=): (rows, summary).

    rows: {'name', 'niqe'} per image (no 'niqe' where it cannot be computed: under 96x96 pixels after the crop, or
    no texture); summary: {'n_images', 'niqe' (mean of the finite scores)}. Without the pristine model the rows
    have no scores (one warning).
    """
    from core.io import list_images, read_image

    if crop_border < 0:
        raise ValueError(f"crop_border must be >= 0, got {crop_border}")
    params = load_niqe_params()
    rows, small = [], 0
    for path in list_images(folder):
        row: dict = {"name": path.stem}
        if params is not None:
            try:
                row["niqe"] = calculate_niqe(read_image(path), crop_border, params)
            except ValueError:  # too small for one block: NIQE is undefined, not an error of the run
                small += 1
        rows.append({k: v for k, v in row.items() if not (isinstance(v, float) and math.isnan(v))})
    if small:
        log.warning(f"NIQE left out for {small} of {len(rows)} images smaller than {NIQE_BLOCK}x{NIQE_BLOCK} "
                    f"pixels after crop_border={crop_border}")
    scores = [r["niqe"] for r in rows if "niqe" in r]
    return rows, {"n_images": len(rows), **({"niqe": float(np.mean(scores))} if scores else {})}
