"""The degradation's JPEG (an exact equivalent of BasicSR's DiffJPEG) against PIL's libjpeg at the same quality,
and its batching of images of different sizes."""

import io

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import fft
from skimage import data

from data.realesrgan.jpeg import dct_matrix, diff_jpeg, jpeg_ragged, quality_factor

PHOTOS = {name: getattr(data, name)()[:192, :192] for name in ("astronaut", "chelsea", "coffee")}


def pil_jpeg(image: np.ndarray, quality: int) -> np.ndarray:
    """PIL's encode + decode (libjpeg, 4:2:0 chroma), as float in [0, 1]."""
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=quality)
    buffer.seek(0)
    return np.asarray(Image.open(buffer).convert("RGB")).astype(np.float64) / 255


def ours(image: np.ndarray, quality: float, standard_tables: bool = False) -> np.ndarray:
    x = torch.from_numpy(image.astype(np.float32) / 255).permute(2, 0, 1)[None]
    return diff_jpeg(x, quality, standard_tables)[0].permute(1, 2, 0).numpy().astype(np.float64)


def luma(x: np.ndarray) -> np.ndarray:
    return x @ np.array([0.299, 0.587, 0.114])


def test_quality_factor_is_libjpegs_scaling():
    q = torch.tensor([10.0, 30.0, 50.0, 75.0, 95.0])
    expected = [500 / 100, (5000 / 30) / 100, 1.0, (200 - 150) / 100, (200 - 190) / 100]
    np.testing.assert_allclose(quality_factor(q).numpy(), expected, rtol=1e-6)


def test_dct_is_scipys_orthonormal_dct():
    block = np.random.default_rng(0).uniform(-128, 127, (8, 8))
    c = dct_matrix().double().numpy()
    np.testing.assert_allclose(c @ c.T, np.eye(8), atol=1e-6)
    np.testing.assert_allclose(c @ block @ c.T, fft.dctn(block, norm="ortho"), atol=1e-3)


@pytest.mark.parametrize("quality", [30, 50, 75])
@pytest.mark.parametrize("name", sorted(PHOTOS))
def test_the_quality_means_what_it_means_for_libjpeg(name, quality):
    # The compression error at quality q lies between PIL's at q - 5 and q + 5: the quality is honoured.
    img = PHOTOS[name]
    src = img / 255
    error = np.abs(ours(img, quality) - src).mean()
    assert np.abs(pil_jpeg(img, quality + 5) - src).mean() < error < np.abs(pil_jpeg(img, quality - 5) - src).mean()


@pytest.mark.parametrize("quality", [30, 60, 90])
def test_close_to_pil_at_the_same_quality(quality):
    # Tolerance: libjpeg rounds the pixels, the YCbCr planes and the scaled tables to integers, uses an integer
    # DCT and a smooth chroma upsampling. Each of these flips the rounding of coefficients near a half step, and
    # a flip costs a whole quantization step, so the two codecs differ by a fraction of the compression error
    # itself, not by a float error. With the standard table orientation that fraction is at most 0.5 here (luma),
    # with DiffJPEG's transposed tables (the official default) at most 0.85; the exact codec is pinned down by
    # test_matches_a_numpy_reference_of_diffjpeg.
    for img in PHOTOS.values():
        src, pil = img / 255, pil_jpeg(img, quality)
        pil_error = np.abs(luma(pil) - luma(src)).mean()
        standard = np.abs(luma(ours(img, quality, standard_tables=True)) - luma(pil)).mean()
        official = np.abs(luma(ours(img, quality)) - luma(pil)).mean()
        assert standard < 0.6 * pil_error
        assert official < 0.9 * pil_error
        assert standard < official  # the transposition is DiffJPEG's, not JPEG's
        assert np.abs(ours(img, quality) - pil).mean() < 0.8 * np.abs(pil - src).mean()  # all three channels


def reference_diffjpeg(rgb: np.ndarray, quality: float) -> np.ndarray:
    """DiffJPEG's codec in float64 numpy, block by block with scipy's DCT (HxWx3 in [0, 1] -> same)."""
    h, w, _ = rgb.shape
    x = np.pad(rgb * 255, ((0, -h % 16), (0, -w % 16), (0, 0)))  # zeros
    y = x @ np.array([0.299, 0.587, 0.114])
    cb = x @ np.array([-0.168736, -0.331264, 0.5]) + 128
    cr = x @ np.array([0.5, -0.418688, -0.081312]) + 128
    half = [(c[0::2, 0::2] + c[0::2, 1::2] + c[1::2, 0::2] + c[1::2, 1::2]) / 4 for c in (cb, cr)]
    factor = (5000 / quality if quality < 50 else 200 - 2 * quality) / 100
    luma_table = np.array([[16, 11, 10, 16, 24, 40, 51, 61], [12, 12, 14, 19, 26, 58, 60, 55],
                           [14, 13, 16, 24, 40, 57, 69, 56], [14, 17, 22, 29, 51, 87, 80, 62],
                           [18, 22, 37, 56, 68, 109, 103, 77], [24, 35, 55, 64, 81, 104, 113, 92],
                           [49, 64, 78, 87, 103, 121, 120, 101], [72, 92, 95, 98, 112, 100, 103, 99]])
    chroma_table = np.full((8, 8), 99.0)
    chroma_table[:4, :4] = [[17, 18, 24, 47], [18, 21, 26, 66], [24, 26, 56, 99], [47, 66, 99, 99]]

    def code(plane, table):
        out = np.empty_like(plane)
        step = table.T * factor  # DiffJPEG's transposed tables
        for i in range(0, plane.shape[0], 8):
            for j in range(0, plane.shape[1], 8):
                coef = fft.dctn(plane[i:i + 8, j:j + 8] - 128, norm="ortho")
                out[i:i + 8, j:j + 8] = fft.idctn(np.round(coef / step) * step, norm="ortho") + 128
        return out

    y = code(y, luma_table)
    cb, cr = (np.repeat(np.repeat(code(c, chroma_table), 2, 0), 2, 1) - 128 for c in half)
    out = np.stack([y + 1.402 * cr, y - 0.344136 * cb - 0.714136 * cr, y + 1.772 * cb], axis=-1)
    return np.clip(out, 0, 255)[:h, :w] / 255


@pytest.mark.parametrize(("quality", "size"), [(30.0, (40, 56)), (63.7, (33, 45)), (95.0, (16, 16))])
def test_matches_a_numpy_reference_of_diffjpeg(quality, size):
    rgb = PHOTOS["astronaut"][:size[0], :size[1]].astype(np.float64) / 255
    diff = np.abs(ours((rgb * 255).astype(np.uint8), quality) - reference_diffjpeg(rgb, quality))
    # float32 vs float64: 1.4e-7 on these crops (a coefficient lying within float error of a half step, which these
    # do not have, would round the other way)
    assert diff.max() < 1e-5


def test_images_of_different_sizes_batch_exactly():
    g = torch.Generator().manual_seed(0)
    images = [torch.rand(1, 3, h, w, generator=g) for h, w in [(37, 50), (64, 64), (17, 90), (8, 8)]]
    quality = torch.tensor([31.5, 94.0, 50.0, 70.2])
    batched = jpeg_ragged(images, quality)
    for img, q, out in zip(images, quality, batched):
        assert out.shape == img.shape
        assert torch.equal(out, diff_jpeg(img, q))
    assert all(0 <= float(x.min()) and float(x.max()) <= 1 for x in batched)
