"""Bad uploads get a message a person can act on, naming the file as uploaded, never a traceback."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from webui.uploads import InputError, mask_from_drawing, read_kernel_upload, read_mask_upload, read_upload


def _png(path, h=20, w=30):
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)
    return path


def test_text_with_an_image_name_is_not_an_image(tmp_path):
    (tmp_path / "x.png").write_text("hello")
    with pytest.raises(InputError, match=r"^photo.png is not an image this page can read"):
        read_upload(tmp_path / "x.png", "photo.png")


def test_truncated_image_is_named_truncated(tmp_path):
    data = _png(tmp_path / "full.png", 64, 64).read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="cut.png is truncated or corrupt"):
        read_upload(tmp_path / "cut.png")


def test_too_many_pixels_offers_tiling_and_reads_below_the_limit(tmp_path):
    path = _png(tmp_path / "big.png")
    with pytest.raises(InputError, match="set a tile size"):
        read_upload(path, max_pixels=599)
    with pytest.raises(InputError, match="max_pixels_tiled") as err:
        read_upload(path, max_pixels=599, tiled=True)
    assert "smaller tile cannot help" in str(err.value)  # the limit counts the image's pixels, not a tile's
    assert read_upload(path, max_pixels=600).shape == (20, 30, 3)


def test_mask_of_the_wrong_size_is_refused(tmp_path):
    Image.fromarray(np.full((10, 12), 255, np.uint8)).save(tmp_path / "m.png")
    with pytest.raises(InputError, match=r"the mask m.png is 12x10 pixels but the image is 30x20"):
        read_mask_upload(tmp_path / "m.png", (20, 30))
    assert read_mask_upload(tmp_path / "m.png", (10, 12)).shape == (1, 1, 10, 12)


def test_drawn_mask_marks_painted_pixels_to_fill():
    layer = np.zeros((6, 8, 4), np.uint8)
    layer[1:3, 2:5, 3] = 255
    mask = mask_from_drawing({"background": None, "layers": [layer], "composite": None}, (6, 8))
    assert mask.shape == (1, 1, 6, 8) and mask.sum() == 48 - 6 and mask[0, 0, 1, 2] == 0
    with pytest.raises(InputError, match="no mask drawn"):
        mask_from_drawing({"layers": [np.zeros((6, 8, 4), np.uint8)]}, (6, 8))
    with pytest.raises(InputError, match="must have the image's size"):
        mask_from_drawing({"layers": [layer]}, (6, 9))


def test_kernel_that_does_not_sum_to_one_is_refused(tmp_path):
    np.save(tmp_path / "k.npy", np.ones((3, 3)))
    with pytest.raises(InputError, match=r"kernel blur.npy: .*sums to 9") as err:
        read_kernel_upload(tmp_path / "k.npy", "blur.npy")
    assert str(tmp_path) not in str(err.value)  # the name the user knows, not the server's temp path
    np.save(tmp_path / "k.npy", np.full((3, 3), 1 / 9))
    assert torch.isclose(read_kernel_upload(tmp_path / "k.npy").sum(), torch.tensor(1.0))
