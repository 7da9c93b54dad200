"""core.io: listing, reading (mode conversions), header sizes, writing and tensor conversions."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from core.errors import DataError
from core.io import image_size, list_images, read_image, to_tensor, to_uint8, write_image


def _rgb(h: int = 40, w: int = 48, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_list_images_natural_order_skips_hidden_and_non_images(tmp_path):
    for name in ("rain-10.png", "rain-2.png", "rain-1.jpg", "Rain-3.PNG", ".rain-0.png", "notes.txt"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "sub.png").mkdir()
    names = [p.name for p in list_images(tmp_path)]
    assert names == ["rain-1.jpg", "rain-2.png", "Rain-3.PNG", "rain-10.png"]


def test_list_images_missing_folder_names_it(tmp_path):
    with pytest.raises(DataError, match="nowhere"):
        list_images(tmp_path / "nowhere")


def test_read_rgb_is_exact(tmp_path):
    img = _rgb()
    Image.fromarray(img).save(tmp_path / "a.png")
    out = read_image(tmp_path / "a.png")
    assert out.dtype == np.uint8 and out.shape == (40, 48, 3)
    np.testing.assert_array_equal(out, img)


def test_grayscale_becomes_three_equal_channels(tmp_path):
    gray = _rgb()[:, :, 0]
    Image.fromarray(gray, mode="L").save(tmp_path / "g.png")
    out = read_image(tmp_path / "g.png")
    assert out.shape == (40, 48, 3)
    for c in range(3):
        np.testing.assert_array_equal(out[:, :, c], gray)


def test_rgba_alpha_is_dropped_not_composited(tmp_path):
    rgba = np.concatenate([_rgb(), np.full((40, 48, 1), 30, np.uint8)], axis=2)
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "a.png")
    out = read_image(tmp_path / "a.png")
    np.testing.assert_array_equal(out, rgba[:, :, :3])  # compositing on white would brighten the pixels


def test_palette_image_gives_palette_colours(tmp_path):
    index = np.random.default_rng(1).integers(0, 4, (40, 48), dtype=np.uint8)
    colours = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [10, 20, 30]], dtype=np.uint8)
    img = Image.fromarray(index, mode="P")
    img.putpalette(colours.ravel().tolist())
    img.save(tmp_path / "p.png")
    np.testing.assert_array_equal(read_image(tmp_path / "p.png"), colours[index])


def test_16bit_grayscale_scaled_to_8bit(tmp_path):
    levels = np.random.default_rng(2).integers(0, 256, (40, 48)).astype(np.uint16)
    Image.fromarray(levels * 257).save(tmp_path / "d.png")  # uint16 -> mode I;16 PNG; 257 * k is k in 8 bits
    out = read_image(tmp_path / "d.png")
    assert out.shape == (40, 48, 3)
    np.testing.assert_array_equal(out[:, :, 1], levels.astype(np.uint8))


def test_missing_and_corrupt_files_are_named(tmp_path):
    with pytest.raises(DataError, match="ghost.png"):
        read_image(tmp_path / "ghost.png")
    (tmp_path / "junk.png").write_bytes(b"not an image at all")
    with pytest.raises(DataError, match="junk.png"):
        read_image(tmp_path / "junk.png")
    with pytest.raises(DataError, match="junk.png"):
        image_size(tmp_path / "junk.png")
    Image.fromarray(_rgb()).save(tmp_path / "cut.png")
    data = (tmp_path / "cut.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="cut.png"):
        read_image(tmp_path / "cut.png")


def test_image_size_is_height_width(tmp_path):
    Image.fromarray(_rgb(40, 48)).save(tmp_path / "a.jpg")
    assert image_size(tmp_path / "a.jpg") == (40, 48)


def test_write_uint8_and_tensor(tmp_path):
    img = _rgb()
    write_image(tmp_path / "deep" / "er" / "a.png", img)
    np.testing.assert_array_equal(read_image(tmp_path / "deep" / "er" / "a.png"), img)
    tensor = torch.from_numpy(img.astype(np.float32) / 255.0).permute(2, 0, 1)
    write_image(tmp_path / "t.png", tensor)
    np.testing.assert_array_equal(read_image(tmp_path / "t.png"), img)
    write_image(tmp_path / "b.png", tensor[None])
    np.testing.assert_array_equal(read_image(tmp_path / "b.png"), img)


def test_to_tensor_layout_and_range():
    img = _rgb(4, 5)
    t = to_tensor(img)
    assert t.shape == (3, 4, 5) and t.dtype == torch.float32
    assert float(t[2, 3, 1]) == pytest.approx(img[3, 1, 2] / 255.0)


def test_to_uint8_clamps_rounds_half_to_even_and_handles_batches():
    values = torch.tensor([0.5, 1.5, 2.5, 3.5, 100.5, 253.5]) / 255.0
    out = to_uint8(values.view(1, 1, 6).expand(3, 1, 6))
    assert out.shape == (1, 6, 3)
    assert out[0, :, 0].tolist() == [0, 2, 2, 4, 100, 254]
    assert to_uint8(torch.tensor([-0.3, 1.7]).view(1, 1, 2))[0, :, 0].tolist() == [0, 255]
    every = np.arange(256, dtype=np.uint8).reshape(16, 16)
    batch = to_tensor(np.stack([every] * 3, axis=2))[None].repeat(2, 1, 1, 1)
    restored = to_uint8(batch)
    assert restored.shape == (2, 16, 16, 3)
    np.testing.assert_array_equal(restored[1, :, :, 0], every)
