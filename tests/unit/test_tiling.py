"""Tests of core.tiling: tiled results equal whole-image results where the blending promises it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from core.nn import crop_to, pad_by, pad_to_multiple
from core.tiling import tiled_apply


def _inputs(h: int = 37, w: int = 53, n: int = 2, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, h, w, generator=gen), torch.rand(n, 1, h, w, generator=gen)


def _conv5(seed: int = 1, out_channels: int = 3) -> torch.nn.Conv2d:
    torch.manual_seed(seed)
    conv = torch.nn.Conv2d(4, out_channels, 5, padding=2)  # receptive-field radius 2
    conv.requires_grad_(False)
    return conv


def test_pointwise_fn_is_reproduced() -> None:
    x, cond = _inputs()

    def fn(a: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(3 * a - 1) * c + a**2

    out = tiled_apply(fn, [x, cond], tile=16, overlap=6)
    torch.testing.assert_close(out, fn(x, cond), atol=1e-6, rtol=0)


@pytest.mark.parametrize("overlap", [8, 12, 20])
def test_local_conv_is_exact_when_overlap_covers_receptive_field(overlap: int) -> None:
    # A 5x5 conv reaches 2 pixels; tiles are exact when overlap // 4 >= 2.
    x, cond = _inputs()
    conv = _conv5()

    def fn(a: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        return conv(torch.cat([a, c], dim=1))

    out = tiled_apply(fn, [x, cond], tile=24, overlap=overlap)
    torch.testing.assert_close(out, fn(x, cond), atol=1e-5, rtol=0)


def test_local_conv_differs_when_overlap_too_small() -> None:
    # Negative control: with overlap 4 the zero margin is 1 pixel < radius 2, so seams show.
    x, cond = _inputs()
    conv = _conv5()

    def fn(a: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        return conv(torch.cat([a, c], dim=1))

    out = tiled_apply(fn, [x, cond], tile=16, overlap=4)
    assert (out - fn(x, cond)).abs().max() > 1e-3


@pytest.mark.parametrize("mode", ["nearest", "pixel_shuffle"])
def test_scale_two(mode: str) -> None:
    x, cond = _inputs(h=29, w=41)
    conv = _conv5(out_channels=12 if mode == "pixel_shuffle" else 3)

    def fn(a: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        y = conv(torch.cat([a, c], dim=1))
        return (
            F.pixel_shuffle(y, 2)
            if mode == "pixel_shuffle"
            else F.interpolate(y, scale_factor=2, mode="nearest")
        )

    out = tiled_apply(fn, [x, cond], tile=16, overlap=8, scale=2)
    expected = fn(x, cond)
    assert out.shape == expected.shape == (2, 3, 58, 82)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)


def test_tile_larger_than_image_calls_fn_once() -> None:
    x, cond = _inputs(h=21, w=30)
    calls: list[tuple[int, ...]] = []

    def fn(a: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        calls.append(tuple(a.shape))
        return a * c

    out = tiled_apply(fn, [x, cond], tile=64, overlap=8)
    assert calls == [(2, 3, 21, 30)]
    torch.testing.assert_close(out, x * cond, atol=0, rtol=0)


def test_tiles_cover_image_with_fixed_size_and_border_alignment() -> None:
    x, _ = _inputs(h=37, w=53, n=1)
    seen: list[tuple[int, int]] = []

    def fn(a: torch.Tensor) -> torch.Tensor:
        seen.append(tuple(a.shape[-2:]))
        return a

    tiled_apply(fn, [x], tile=16, overlap=8)
    # Rows start at 0, 8, 16 and 21 (= 37 - 16); columns at 0, 8, ..., 32 and 37 (= 53 - 16).
    assert len(seen) == 4 * 6 and set(seen) == {(16, 16)}


def test_multiple_rounds_tile_and_pads_odd_images() -> None:
    x, cond = _inputs(h=37, w=53)
    shapes: set[tuple[int, int]] = set()

    def fn(a: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        assert a.shape[-2] % 8 == 0 and a.shape[-1] % 8 == 0, "fn needs sides that are multiples of 8"
        shapes.add(tuple(a.shape[-2:]))
        return a * c + 1

    out = tiled_apply(fn, [x, cond], tile=20, overlap=8, multiple=8)  # tile rounded down to 16
    assert shapes == {(16, 16)}
    torch.testing.assert_close(out, x * cond + 1, atol=1e-6, rtol=0)
    # Whole image in one tile still gets padded to the multiple, and cropped back.
    shapes.clear()
    out = tiled_apply(fn, [x, cond], tile=64, overlap=8, multiple=8)
    assert shapes == {(40, 56)}
    torch.testing.assert_close(out, x * cond + 1, atol=0, rtol=0)


@pytest.mark.parametrize(
    "h,w,tile,overlap", [(37, 53, 16, 0), (37, 53, 16, 15), (50, 19, 17, 9), (64, 64, 32, 31)]
)
def test_weights_cover_every_pixel(h: int, w: int, tile: int, overlap: int) -> None:
    # Blending a constant gives the constant back only if every pixel has a positive total weight.
    x, _ = _inputs(h=h, w=w, n=1)
    out = tiled_apply(lambda a: torch.full_like(a, 0.25), [x], tile=tile, overlap=overlap)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, torch.full_like(x, 0.25), atol=1e-6, rtol=0)


def test_rejects_bad_arguments() -> None:
    x, _ = _inputs()
    with pytest.raises(ValueError):
        tiled_apply(lambda a: a, [x], tile=16, overlap=16)
    with pytest.raises(ValueError):
        tiled_apply(lambda a: a, [x, x[..., :-1]], tile=16, overlap=4)
    with pytest.raises(ValueError):
        tiled_apply(lambda a: a[..., :-1, :], [x], tile=16, overlap=4)


def test_pad_to_multiple_reflect_and_crop() -> None:
    x = torch.arange(2 * 3 * 10 * 13, dtype=torch.float32).view(2, 3, 10, 13)
    padded, pad_h, pad_w = pad_to_multiple(x, 8)
    assert (pad_h, pad_w) == (6, 3) and padded.shape == (2, 3, 16, 16)
    expected = np.pad(x.numpy(), ((0, 0), (0, 0), (0, 6), (0, 3)), mode="reflect")
    np.testing.assert_array_equal(padded.numpy(), expected)
    torch.testing.assert_close(crop_to(padded, (10, 13)), x, atol=0, rtol=0)
    same, *pads = pad_to_multiple(padded, 8)
    assert same is padded and pads == [0, 0]
    # A paired image at twice the size is padded alike by the scaled amounts; other F.pad modes pass through.
    x2 = torch.rand(1, 3, 20, 26)
    np.testing.assert_array_equal(pad_by(x2, 2 * pad_h, 2 * pad_w).numpy(),
                                  np.pad(x2.numpy(), ((0, 0), (0, 0), (0, 12), (0, 6)), mode="reflect"))
    assert pad_to_multiple(x, 8, mode="constant")[0][..., 10:, :].abs().max() == 0


def test_pad_to_multiple_falls_back_to_replicate() -> None:
    x = torch.arange(3 * 5, dtype=torch.float32).view(1, 1, 3, 5)  # padding 5 rows to 8 exceeds the 3 rows
    padded, pad_h, pad_w = pad_to_multiple(x, 8)
    assert (pad_h, pad_w) == (5, 3)
    expected = np.pad(x.numpy(), ((0, 0), (0, 0), (0, 5), (0, 3)), mode="edge")
    np.testing.assert_array_equal(padded.numpy(), expected)
    # 3-D input works too.
    padded3, _, _ = pad_to_multiple(x[0], 4)
    np.testing.assert_array_equal(
        padded3.numpy(), np.pad(x[0].numpy(), ((0, 0), (0, 1), (0, 3)), mode="reflect")
    )
