"""LaMa's mask generator (data.lama_masks): the official draw ranges and quirks, kind frequencies, coverage,
seeded determinism, scaling, and its use by the CelebA-HQ and Places2 data modules."""

from __future__ import annotations

import os
from collections import Counter

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402

from core.errors import DataError  # noqa: E402
from data.datamodules import CelebAHQDataModule  # noqa: E402
from data.lama_masks import (  # noqa: E402
    PRESETS,
    LamaMask,
    boxes,
    draw_holes,
    draw_training_holes,
    lama_mask,
    strokes,
)
from data.masks import resize_mask_nearest  # noqa: E402
from data.places2 import Places2DataModule  # noqa: E402


def test_stroke_draws_cover_lamas_ranges_including_the_extra_stroke():
    kw = PRESETS["train"]["irregular"]  # max_angle 4, max_len 200, max_width 100, times 1..5
    counts, lengths, widths = Counter(), [], []
    segment_counts = Counter()
    for seed in range(400):
        drawn = strokes(np.random.default_rng(seed), 256, 256, **kw)
        counts[len(drawn)] += 1
        for stroke in drawn:
            segment_counts[len(stroke)] += 1
            for x0, y0, x1, y1, w in stroke:
                widths.append(w)
                assert 0 <= x1 <= 256 and 0 <= y1 <= 256
                lengths.append(np.hypot(x1 - x0, y1 - y0))
    assert set(counts) == {1, 2, 3, 4, 5, 6}  # LaMa's wrapper passes max_times + 1
    assert set(segment_counts) == {1, 2, 3, 4, 5}
    assert min(widths) >= 5 and max(widths) <= 104 and max(widths) > 95
    assert max(lengths) <= 209 * 1.01 and min(lengths) < 15  # 10 + randint(200), shortened by clipping
    allowed = np.array([0.01, 1.01, 2.01, 3.01, *(2 * 3.1415926 - a for a in (0.01, 1.01, 2.01, 3.01))])
    side = 100_000  # long strokes far from the border: the int truncation barely moves the angle
    drawn = strokes(np.random.default_rng(1), side, side, 4, 3000, 5, 20, 20)
    for x0, y0, x1, y1, _ in (seg for stroke in drawn for seg in stroke):
        if 0 < x1 < side and 0 < y1 < side:
            angle = float(np.arctan2(x1 - x0, y1 - y0)) % (2 * np.pi)  # LaMa: x uses sin, y uses cos
            assert np.abs(allowed - angle).min() < 2.0 / np.hypot(x1 - x0, y1 - y0), angle  # 1 px of truncation


def test_boxes_follow_the_official_sizes_and_margins():
    kw = PRESETS["train"]["box"]  # margin 10, sides 30..150, 1..4 boxes
    sides, counts = [], Counter()
    for seed in range(300):
        rects = boxes(np.random.default_rng(seed), 256, 256, **kw)
        counts[len(rects)] += 1
        for top, left, h, w in rects:
            sides += [h, w]
            assert top >= 10 and left >= 10 and top + h <= 246 and left + w <= 246
        holes = draw_holes(256, 256, rects=rects)
        union = np.zeros((256, 256), bool)
        for top, left, h, w in rects:
            union[top:top + h, left:left + w] = True
        assert holes.sum() == union.sum()
    assert set(counts) == {1, 2, 3, 4}
    assert min(sides) == 30 and max(sides) == 150


def test_training_mix_is_half_strokes_half_boxes_and_seeded():
    kinds = Counter(draw_training_holes(np.random.default_rng(s), 256, 256, PRESETS["train"])[1] for s in range(400))
    assert 160 <= kinds["box"] <= 240 and kinds["box"] + kinds["irregular"] == 400  # p = 1/2, 4 sigma = 40
    maker = LamaMask("train")
    a, b, c = maker(256, 256, 7), maker(256, 256, 7), maker(256, 256, 8)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert a.dtype == np.float32 and set(np.unique(a)) <= {0.0, 1.0}
    np.testing.assert_array_equal(a, 1.0 - maker.holes(256, 256, 7))  # suite polarity: 1 = known


@pytest.mark.parametrize(("preset", "mean_range"), [("train", (0.28, 0.41)), ("thin_256", (0.24, 0.35)),
                                                     ("medium_256", (0.18, 0.28)), ("thick_256", (0.20, 0.30))])
def test_coverage(preset, mean_range):
    maker = LamaMask(preset)
    coverage = np.array([1.0 - maker(256, 256, seed).mean() for seed in range(100)])
    assert (coverage > 0).all() and mean_range[0] < coverage.mean() < mean_range[1]
    if preset != "train":  # gen_mask_dataset.py keeps masks covering at most half the image
        assert coverage.max() <= 0.5
    else:
        assert coverage.max() > 0.5


def test_other_sizes_draw_at_the_preset_scale_and_resize():
    maker = LamaMask("thick_512")
    small = maker(64, 96, 3)
    np.testing.assert_array_equal(small, resize_mask_nearest(maker(512, 768, 3), (64, 96)))
    assert lama_mask("lama") == LamaMask("train") and lama_mask("lama_thin_256") == LamaMask("thin_256")
    with pytest.raises(ValueError, match="lama_thick_256"):
        lama_mask("thick")


def _save(path, seed, size=40):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size, size + 8, 3), dtype=np.uint8)).save(path)


def test_celebahq_trains_on_lama_masks_and_tests_on_a_fixed_set(tmp_path):
    for i in range(6):
        _save(tmp_path / "CelebA-HQ-img" / f"{i}.png", i)
    options = dict(split_ranges={"train": [0, 3], "test": [4, 5]}, image_size=32, patch_size=32, batch_size=2,
                   num_workers=0, train_mask="lama", generated_mask="lama_thick_256")
    dm = CelebAHQDataModule(str(tmp_path), **options)
    dm.setup("fit")
    assert dm.train_set.mask_fn == LamaMask("train") and dm.val_set.mask_fn == LamaMask("thick_256")
    dm.setup("test")
    item = dm.test_set[1]
    np.testing.assert_array_equal(item["mask"][0].numpy(), LamaMask("thick_256")(32, 32, 1))  # seeded by index
    with pytest.raises(DataError, match="lama_thin_256"):
        CelebAHQDataModule(str(tmp_path), **{**options, "train_mask": "lama_wide"})


def test_places2_layout_names_crops_and_masks(tmp_path):
    for i, rel in enumerate(("a/abbey/00000001.jpg", "a/airfield/00000001.jpg", "b/bar/00000002.jpg")):
        _save(tmp_path / "data_large" / rel, i, size=48)
    for i in range(2):
        _save(tmp_path / "val_large" / f"Places365_val_{i + 1:08d}.jpg", 10 + i, size=40)
    dm = Places2DataModule(str(tmp_path), patch_size=32, batch_size=2, num_workers=0, eval_crop=32,
                           generated_mask="lama_thick_512", verify=False)
    assert [p.name for p in dm.pairs_for("train")] == ["a_abbey_00000001", "a_airfield_00000001", "b_bar_00000002"]
    dm.setup("fit")
    assert dm.train_set.mask_fn == LamaMask("train")
    dm.setup("test")
    item = dm.test_set[0]
    assert item["gt"].shape == (3, 32, 32) and item["name"] == "Places365_val_00000001"
    np.testing.assert_array_equal(item["mask"][0].numpy(), LamaMask("thick_512")(32, 32, 0))
    with pytest.raises(DataError, match="val_large"):
        Places2DataModule(str(tmp_path / "nothing"), num_workers=0).setup("test")
