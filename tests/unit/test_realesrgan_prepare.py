"""scripts/prepare_df2k.py on tiny images: the official multi-scale sizes, the sliding-window crops (positions
computed here from the official rule), their content, and the meta-info list."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "prepare_df2k.py"
spec = importlib.util.spec_from_file_location("prepare_df2k", SCRIPT)
prepare_df2k = importlib.util.module_from_spec(spec)
spec.loader.exec_module(prepare_df2k)

CROP, STEP, EDGE = 16, 8, 20


def starts(length):
    """The official rule, written out: 0, step, ... while a crop fits, then one flush with the end."""
    if length < CROP:
        return []
    out = [s for s in range(0, length) if s + CROP <= length and s % STEP == 0]
    return out + ([length - CROP] if length - (out[-1] + CROP) > 0 else [])


def test_multiscale_copies_sub_images_and_meta_info(tmp_path):
    rng = np.random.default_rng(0)
    div2k, flickr = tmp_path / "DIV2K_train_HR", tmp_path / "Flickr2K_HR"
    div2k.mkdir(), flickr.mkdir()
    originals = {"0001": rng.integers(0, 256, (30, 50, 3), dtype=np.uint8),
                 "000002": rng.integers(0, 256, (45, 33, 3), dtype=np.uint8)}
    Image.fromarray(originals["0001"]).save(div2k / "0001.png")
    Image.fromarray(originals["000002"]).save(flickr / "000002.png")
    out = tmp_path / "DF2K"
    meta = prepare_df2k.prepare([div2k, flickr], out, shortest_edge=EDGE, crop_size=CROP, step=STEP)

    expected_sizes = {"0001": [(37, 22), (25, 15), (16, 10), (33, 20)],  # (w, h): int(50 s) x int(30 s); edge 20
                      "000002": [(24, 33), (16, 22), (11, 15), (20, 27)]}  # 33 x 45; 20 x int(20 * 45 / 33)
    listed = meta.read_text().splitlines()
    total = 0
    for stem, array in originals.items():
        h, w = array.shape[:2]
        positions = [(t, s) for t in starts(h) for s in starts(w)]
        for k, (top, left) in enumerate(positions, start=1):
            crop = np.asarray(Image.open(out / "DF2K_HR_sub" / f"{stem}_s{k:03d}.png"))
            np.testing.assert_array_equal(crop, array[top:top + CROP, left:left + CROP])
        assert not (out / "DF2K_HR_sub" / f"{stem}_s{len(positions) + 1:03d}.png").exists()
        total += len(positions)
        for idx, size in enumerate(expected_sizes[stem]):
            scaled = Image.open(out / "DF2K_multiscale" / f"{stem}T{idx}.png")
            assert scaled.size == size
            subs = sorted((out / "DF2K_multiscale_sub").glob(f"{stem}T{idx}_s*.png"))
            assert len(subs) == len(starts(size[1])) * len(starts(size[0]))  # none when smaller than the crop
            total += len(subs)
    assert len(listed) == total == len(set(listed))
    assert all((out / p).is_file() and Image.open(out / p).size == (CROP, CROP) for p in listed)
    assert "DF2K_HR_sub/0001_s001.png" in listed
    with pytest.raises(SystemExit, match="not empty"):
        prepare_df2k.prepare([div2k], out)
