"""data.layouts: every distributed layout is detected and paired, and bad trees give helpful DataErrors."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core.errors import DataError
from data.layouts import (
    celebahq_images,
    div2k_pairs,
    folder_pairs,
    gopro_pairs,
    pair_key,
    rain100h_pairs,
    single_folder,
)


def _png_bytes() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.zeros((40, 48, 3), np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


PNG = _png_bytes()


def _files(folder: Path, *names: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).write_bytes(PNG)


def _names(pairs) -> list[tuple[str | None, str, str]]:
    return [(p.lq.name if p.lq else None, p.gt.name, p.name) for p in pairs]


# ---------------------------------------------------------------------------------------------------------
# Rain100H
# ---------------------------------------------------------------------------------------------------------
def test_rain_norain_folders_with_prefixed_names_in_split_alias(tmp_path):
    _files(tmp_path / "train" / "rain", "rain-1.png", "rain-2.png", "rain-10.png")
    _files(tmp_path / "train" / "norain", "norain-10.png", "norain-1.png", "norain-2.png")
    pairs = rain100h_pairs(tmp_path, "train")
    assert _names(pairs) == [("rain-1.png", "norain-1.png", "norain-1"),
                             ("rain-2.png", "norain-2.png", "norain-2"),
                             ("rain-10.png", "norain-10.png", "norain-10")]


def test_rain_norain_identical_names_for_test_split(tmp_path):
    _files(tmp_path / "Rain100H" / "rain", "norain-1.png", "norain-2.png")
    _files(tmp_path / "Rain100H" / "norain", "norain-1.png", "norain-2.png")
    pairs = rain100h_pairs(tmp_path, "test")
    assert [(p.lq.parent.name, p.gt.parent.name, p.name) for p in pairs] == [
        ("rain", "norain", "norain-1"), ("rain", "norain", "norain-2")]


def test_single_folder_of_rain_and_norain_files(tmp_path):
    _files(tmp_path / "RainTrainH", "rain-1.png", "norain-1.png", "rain-3.png", "norain-3.png")
    pairs = rain100h_pairs(tmp_path, "train")
    assert _names(pairs) == [("rain-1.png", "norain-1.png", "norain-1"),
                             ("rain-3.png", "norain-3.png", "norain-3")]


def test_input_target_and_lq_gt_layouts(tmp_path):
    _files(tmp_path / "test" / "Rain100H" / "input", "1.png", "2.png")
    _files(tmp_path / "test" / "Rain100H" / "target", "1.png", "2.png")
    _files(tmp_path / "trainH" / "LQ", "a.png")
    _files(tmp_path / "trainH" / "GT", "a.png")
    test = rain100h_pairs(tmp_path, "test")
    assert [p.lq.parent.name for p in test] == ["input", "input"] and [p.name for p in test] == ["1", "2"]
    train = rain100h_pairs(tmp_path, "train")
    assert _names(train) == [("a.png", "a.png", "a")] and train[0].lq.parent.name == "LQ"


def test_layout_directly_under_root(tmp_path):
    _files(tmp_path / "LQ", "x.png")
    _files(tmp_path / "GT", "x.png")
    assert _names(rain100h_pairs(tmp_path, "test")) == [("x.png", "x.png", "x")]


def test_no_layout_lists_what_was_looked_for(tmp_path):
    _files(tmp_path / "pictures", "a.png")
    with pytest.raises(DataError) as err:
        rain100h_pairs(tmp_path, "train")
    message = str(err.value)
    for layout in ("{rain,norain}", "{input,target}", "{LQ,GT}", "rain-N"):
        assert layout in message
    assert str(tmp_path) in message
    with pytest.raises(DataError, match="not found"):
        rain100h_pairs(tmp_path / "missing", "train")


def test_empty_folder_is_reported(tmp_path):
    (tmp_path / "test" / "rain").mkdir(parents=True)
    _files(tmp_path / "test" / "norain", "norain-1.png")
    with pytest.raises(DataError, match=r"No images in .*rain"):
        rain100h_pairs(tmp_path, "test")


def test_count_mismatch_lists_the_unpaired_names(tmp_path):
    _files(tmp_path / "rain", "rain-1.png", "rain-2.png")
    _files(tmp_path / "norain", "norain-1.png", "norain-2.png", "norain-7.png", "norain-8.png")
    with pytest.raises(DataError) as err:
        rain100h_pairs(tmp_path, "train")
    message = str(err.value)
    assert "2 in" in message and "4 in" in message
    assert "norain-7.png" in message and "norain-8.png" in message and "norain-1.png" not in message


# ---------------------------------------------------------------------------------------------------------
# GoPro
# ---------------------------------------------------------------------------------------------------------
def _gopro(root: Path, split: str, scene: str, frames: tuple[str, ...], gamma: bool = True) -> None:
    for kind in ("blur", "sharp") + (("blur_gamma",) if gamma else ()):
        _files(root / "GOPRO_Large" / split / scene / kind, *frames)


@pytest.mark.parametrize("blur", ["blur", "blur_gamma"])
def test_gopro_scene_layout_blur_versions(tmp_path, blur):
    _gopro(tmp_path, "train", "GOPR0372_07_00", ("000047.png", "000048.png"))
    _gopro(tmp_path, "train", "GOPR0374_11_00", ("000001.png",))
    _gopro(tmp_path, "test", "GOPR0384_11_00", ("000001.png",))
    for root in (tmp_path, tmp_path / "GOPRO_Large"):
        pairs = gopro_pairs(root, "train", blur=blur)
        assert [p.name for p in pairs] == ["GOPR0372_07_00/000047", "GOPR0372_07_00/000048",
                                           "GOPR0374_11_00/000001"]
        assert {p.lq.parent.name for p in pairs} == {blur} and {p.gt.parent.name for p in pairs} == {"sharp"}
        assert all(p.lq.parent.parent == p.gt.parent.parent for p in pairs)
    assert [p.name for p in gopro_pairs(tmp_path, "test", blur)] == ["GOPR0384_11_00/000001"]


def test_gopro_missing_blur_gamma_folder(tmp_path):
    _gopro(tmp_path, "train", "GOPR0372_07_00", ("000047.png",), gamma=False)
    with pytest.raises(DataError, match="blur_gamma"):
        gopro_pairs(tmp_path, "train", blur="blur_gamma")


def test_gopro_flat_layouts(tmp_path):
    _files(tmp_path / "test" / "GoPro" / "input", "a.png")
    _files(tmp_path / "test" / "GoPro" / "target", "a.png")
    _files(tmp_path / "train" / "blur", "b.png")
    _files(tmp_path / "train" / "sharp", "b.png")
    assert _names(gopro_pairs(tmp_path, "test")) == [("a.png", "a.png", "a")]
    assert _names(gopro_pairs(tmp_path, "train")) == [("b.png", "b.png", "b")]
    with pytest.raises(DataError, match="single blurred version"):
        gopro_pairs(tmp_path, "test", blur="blur_gamma")
    with pytest.raises(DataError, match="GOPRO_Large"):
        gopro_pairs(tmp_path / "train" / "blur", "test")


# ---------------------------------------------------------------------------------------------------------
# DIV2K
# ---------------------------------------------------------------------------------------------------------
def test_div2k_with_lr_folder(tmp_path):
    _files(tmp_path / "DIV2K_train_HR", "0001.png", "0002.png")
    _files(tmp_path / "DIV2K_train_LR_bicubic" / "X4", "0001x4.png", "0002x4.png")
    _files(tmp_path / "DIV2K_valid_HR", "0801.png")
    _files(tmp_path / "DIV2K_valid_LR_bicubic" / "X4", "0801x4.png")
    assert _names(div2k_pairs(tmp_path, "train", 4)) == [("0001x4.png", "0001.png", "0001"),
                                                          ("0002x4.png", "0002.png", "0002")]
    assert _names(div2k_pairs(tmp_path, "test", 4)) == [("0801x4.png", "0801.png", "0801")]
    # No X2 folder: LR made on the fly.
    on_the_fly = div2k_pairs(tmp_path, "train", 2)
    assert _names(on_the_fly) == [(None, "0001.png", "0001"), (None, "0002.png", "0002")]


def test_div2k_without_lr_nested_and_missing(tmp_path):
    _files(tmp_path / "DIV2K" / "DIV2K_valid_HR", "0801.png", "0802.png")
    valid = div2k_pairs(tmp_path, "valid", 4)
    assert _names(valid) == [(None, "0801.png", "0801"), (None, "0802.png", "0802")]
    with pytest.raises(DataError, match="DIV2K_train_HR"):
        div2k_pairs(tmp_path, "train", 4)


# ---------------------------------------------------------------------------------------------------------
# CelebA-HQ
# ---------------------------------------------------------------------------------------------------------
def test_celebahq_default_ranges_use_file_numbers(tmp_path):
    _files(tmp_path / "CelebA-HQ-img", "27998.jpg", "27999.jpg", "28000.jpg", "28001.jpg", "3.jpg")
    assert [p.name for p in celebahq_images(tmp_path, "train")] == ["3", "27998", "27999"]
    test = celebahq_images(tmp_path, "test")
    assert [p.name for p in test] == ["28000", "28001"] and all(p.lq is None for p in test)


def test_celebahq_custom_ranges_list_file_and_presplit(tmp_path):
    _files(tmp_path / "celeba_hq_256", *(f"{i:05d}.jpg" for i in range(10)))
    ranges = {"train": [0, 6], "test": [7, 9]}
    assert [p.name for p in celebahq_images(tmp_path, "test", ranges)] == ["00007", "00008", "00009"]
    listing = tmp_path / "faces.txt"
    listing.write_text("# chosen faces\n00004.jpg\n00001\n\n")
    assert [p.name for p in celebahq_images(tmp_path, "train", list_file=listing)] == ["00004", "00001"]
    listing.write_text("00004\n99999\n")
    with pytest.raises(DataError, match="99999"):
        celebahq_images(tmp_path, "train", list_file=listing)
    with pytest.raises(DataError, match=r"\[50, 60\]"):
        celebahq_images(tmp_path, "test", {"test": [50, 60]})
    _files(tmp_path / "data256x256" / "testHQ", "face.png")
    assert [p.name for p in celebahq_images(tmp_path, "test")] == ["face"]


def test_celebahq_non_numeric_names_split_by_position(tmp_path):
    _files(tmp_path, "a.png", "b.png", "c.png")
    assert [p.name for p in celebahq_images(tmp_path, "test", {"test": [1, 2]})] == ["b", "c"]


# ---------------------------------------------------------------------------------------------------------
# Generic
# ---------------------------------------------------------------------------------------------------------
def test_pair_key_normalisation():
    assert pair_key("norain-001") == pair_key("rain-1") == "1"
    assert pair_key("0001x4") == pair_key("0001") == "1"
    assert pair_key("img_rain") == pair_key("img_gt") == "img"
    assert pair_key("box4") == "box4"


def test_folder_pairs_exact_then_normalised_and_ambiguous(tmp_path):
    _files(tmp_path / "restored", "a.png", "b.png")
    _files(tmp_path / "gt", "b.jpg", "a.jpg")
    assert _names(folder_pairs(tmp_path / "restored", tmp_path / "gt")) == [("a.png", "a.jpg", "a"),
                                                                             ("b.png", "b.jpg", "b")]
    _files(tmp_path / "lr", "0001x4.png", "0002x4.png")
    _files(tmp_path / "hr", "0001.png", "0002.png")
    assert [p.lq.name for p in folder_pairs(tmp_path / "lr", tmp_path / "hr")] == ["0001x4.png", "0002x4.png"]
    _files(tmp_path / "dup", "rain-1.png", "rain-01.png")
    with pytest.raises(DataError, match="ambiguous"):
        folder_pairs(tmp_path / "dup", tmp_path / "hr")


def test_single_folder(tmp_path):
    _files(tmp_path / "clean", "b.png", "a.png")
    assert _names(single_folder(tmp_path / "clean")) == [(None, "a.png", "a"), (None, "b.png", "b")]
    (tmp_path / "void").mkdir()
    with pytest.raises(DataError, match="No images"):
        single_folder(tmp_path / "void")
