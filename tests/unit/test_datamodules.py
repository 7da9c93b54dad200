"""data.transforms, data.datasets, data.datamodules and data.demo on tiny folders made in tmp_path."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

from core.errors import DataError  # noqa: E402
from data.datamodules import (  # noqa: E402
    CelebAHQDataModule,
    DemoDataModule,
    DenoisingDataModule,
    DIV2KDataModule,
    FolderPairDataModule,
    GoProDataModule,
    Rain100HDataModule,
)
from data.datasets import PairedImageDataset  # noqa: E402
from data.demo import TASKS, TEST_PHOTOS, TRAIN_PHOTOS, build_demo_split  # noqa: E402
from data.layouts import Pair  # noqa: E402
from data.masks import read_mask  # noqa: E402
from data.synthetic import NoiseLQ  # noqa: E402
from data.transforms import center_crop_pair, paired_train_transform  # noqa: E402

H, W = 40, 48


@pytest.fixture(autouse=True)
def _own_cache_dir(tmp_path_factory, monkeypatch):
    # data.verify's cache goes to $XDG_CACHE_HOME: keep it out of the user's home
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("cache")))


def _image(seed: int, h: int = H, w: int = W) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _save(path: Path, img: np.ndarray, mode: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img, mode=mode).save(path)
    return path


def _block_mean(img: np.ndarray, s: int) -> np.ndarray:
    h, w = img.shape[0] // s, img.shape[1] // s
    return img[: h * s, : w * s].reshape(h, s, w, s, -1).mean(axis=(1, 3))


# ---------------------------------------------------------------------------------------------------------
# Transforms
# ---------------------------------------------------------------------------------------------------------
def _dihedral(img: np.ndarray) -> list[np.ndarray]:
    out = []
    for k in range(4):
        rotated = np.rot90(img, k)
        out += [rotated, rotated[:, ::-1]]
    return out


def test_paired_transform_keeps_lq_gt_mask_aligned_and_crops_real_windows():
    gt = _image(0).astype(np.float32) / 255
    lq, mask = 1.0 - gt, (gt[:, :, 0] > 0.5).astype(np.float32)
    transform = paired_train_transform(16, seed=0)
    windows = np.lib.stride_tricks.sliding_window_view(gt, (16, 16, 3))[:, :, 0]  # every 16x16 GT window
    seen = set()
    for _ in range(24):
        out = transform(gt, lq, mask, name="x")
        assert out["gt"].shape == (16, 16, 3) and out["mask"].shape == (16, 16)
        np.testing.assert_array_equal(out["lq"], 1.0 - out["gt"])
        np.testing.assert_array_equal(out["mask"], (out["gt"][:, :, 0] > 0.5).astype(np.float32))
        # The patch is one of the 8 flips/rotations of a 16x16 window of the GT.
        hits = [i for i, v in enumerate(_dihedral(out["gt"])) if (windows == v).all(axis=(2, 3, 4)).any()]
        assert hits
        seen.add(hits[0])
    assert len(seen) >= 4  # flips and rotations are actually applied


def test_scaled_transform_keeps_lr_hr_correspondence():
    gt = _image(1).astype(np.float64) / 255
    lq = _block_mean(gt, 4)  # 10x12 LR whose pixels are the mean of their 4x4 HR blocks
    transform = paired_train_transform(16, scale=4, seed=1)
    for _ in range(12):
        out = transform(gt, lq, name="x")
        assert out["gt"].shape == (16, 16, 3) and out["lq"].shape == (4, 4, 3)
        np.testing.assert_allclose(_block_mean(out["gt"], 4), out["lq"], atol=1e-12)


def test_transform_rejects_images_smaller_than_the_patch():
    gt = _image(2).astype(np.float32) / 255
    with pytest.raises(DataError, match=r"tiny\.png.*40x48.*data\.patch_size"):
        paired_train_transform(64)(gt, gt, name="tiny.png")
    with pytest.raises(DataError, match="multiple"):
        paired_train_transform(30, scale=4)


def test_center_crop_pair_matches_official_placement():
    gt = _image(3).astype(np.float64)
    lq = _block_mean(gt, 4)
    crop_gt, crop_lq, _ = center_crop_pair(gt, lq, size=16, scale=4)
    top, left = 10 // 2 - 2, 12 // 2 - 2  # LR window at H//2 - lr_size//2
    np.testing.assert_array_equal(crop_lq, lq[top:top + 4, left:left + 4])
    np.testing.assert_array_equal(crop_gt, gt[4 * top:4 * top + 16, 4 * left:4 * left + 16])
    same_gt, same_lq, same_mask = center_crop_pair(gt, gt + 1, gt[:, :, 0], size=20)
    np.testing.assert_array_equal(same_gt, gt[10:30, 14:34])
    np.testing.assert_array_equal(same_lq, same_gt + 1)
    np.testing.assert_array_equal(same_mask, same_gt[:, :, 0])


# ---------------------------------------------------------------------------------------------------------
# Dataset randomness
# ---------------------------------------------------------------------------------------------------------
def test_test_time_noise_is_fixed_per_index_and_training_noise_varies(tmp_path):
    path = _save(tmp_path / "a.png", _image(4))
    pairs = [Pair(None, path, "a"), Pair(None, path, "a")]
    test = PairedImageDataset(pairs, train=False, make_lq=NoiseLQ(25))
    first, again, other = test[0], test[0], test[1]
    torch.testing.assert_close(first["lq"], again["lq"])
    assert not torch.equal(first["lq"], other["lq"])  # same image, different index -> different noise
    rebuilt = PairedImageDataset(pairs, train=False, make_lq=NoiseLQ(25))[0]
    torch.testing.assert_close(rebuilt["lq"], first["lq"])
    train = PairedImageDataset(pairs, train=True, patch_size=16, make_lq=NoiseLQ(25))
    assert not torch.equal(train[0]["lq"] - train[0]["gt"], train[0]["lq"] - train[0]["gt"])


def test_dataloader_workers_do_not_repeat_augmentations(tmp_path):
    path = _save(tmp_path / "a.png", _image(5))
    dataset = PairedImageDataset([Pair(None, path, "a")] * 4, train=True, patch_size=16)
    loader = torch.utils.data.DataLoader(dataset, batch_size=1, num_workers=2)
    patches = [batch["gt"] for batch in loader]  # items 0, 2 from worker 0 and 1, 3 from worker 1
    assert not torch.equal(patches[0], patches[1])


# ---------------------------------------------------------------------------------------------------------
# Data modules
# ---------------------------------------------------------------------------------------------------------
def _rain_tree(root: Path, n_train: int = 4) -> None:
    for split, n in (("train", n_train), ("test", 2)):
        for i in range(1, n + 1):
            gt = _image(10 * i + len(split))
            _save(root / split / "norain" / f"norain-{i}.png", gt)
            _save(root / split / "rain" / f"rain-{i}.png", 255 - gt)


def _first_batch(dm, loader: str = "train") -> dict:
    return next(iter(getattr(dm, f"{loader}_dataloader")()))


def _check_batch(batch: dict, n: int, size: tuple[int, int], lq_size: tuple[int, int] | None = None) -> None:
    assert {"lq", "gt", "name", "index"} <= set(batch)
    assert batch["gt"].shape == (n, 3, *size) and batch["gt"].dtype == torch.float32
    assert batch["lq"].shape == (n, 3, *(lq_size or size))
    assert 0.0 <= float(batch["gt"].min()) and float(batch["gt"].max()) <= 1.0
    assert len(batch["name"]) == n and batch["index"].shape == (n,)


def test_rain100h_datamodule_batches_and_alignment(tmp_path):
    _rain_tree(tmp_path)
    dm = Rain100HDataModule(str(tmp_path), patch_size=16, batch_size=2, num_workers=0, val_max_images=1)
    dm.setup("fit")
    batch = _first_batch(dm)
    _check_batch(batch, 2, (16, 16))
    torch.testing.assert_close(batch["lq"], 1.0 - batch["gt"], atol=1e-6, rtol=0)
    assert len(dm.val_set) == 1 and len(dm.train_dataloader()) == 2
    dm.setup("test")
    test = _first_batch(dm, "test")
    _check_batch(test, 1, (H, W))
    assert test["name"] == ["norain-1"]
    assert dm.metric_y_channel is True and dm.metric_crop_border == 0 and dm.name == "rain100h"
    assert [p.name for p in dm.pairs_for("test")] == ["norain-1", "norain-2"]


def test_grayscale_and_rgba_files_are_read_as_rgb(tmp_path):
    _rain_tree(tmp_path)
    gray = _image(99)[:, :, 0]
    _save(tmp_path / "test" / "norain" / "norain-1.png", gray, mode="L")
    rgba = np.concatenate([_image(98), np.full((H, W, 1), 9, np.uint8)], axis=2)
    _save(tmp_path / "test" / "rain" / "rain-1.png", rgba, mode="RGBA")
    dm = Rain100HDataModule(str(tmp_path), patch_size=16, batch_size=2, num_workers=0)
    dm.setup("test")
    batch = _first_batch(dm, "test")
    _check_batch(batch, 1, (H, W))
    torch.testing.assert_close(batch["gt"][0, 2], torch.from_numpy(gray / 255.0).float())
    rgb = torch.from_numpy(rgba[:, :, :3] / 255.0).float().permute(2, 0, 1)
    torch.testing.assert_close(batch["lq"][0], rgb)


def test_setup_names_small_unreadable_and_mismatched_images(tmp_path):
    _rain_tree(tmp_path)
    _save(tmp_path / "train" / "norain" / "norain-3.png", _image(7, 12, 14))
    _save(tmp_path / "train" / "rain" / "rain-3.png", _image(7, 12, 14))
    with pytest.raises(DataError, match=r"norain-3\.png \(12x14\).*patch_size"):
        Rain100HDataModule(str(tmp_path), patch_size=16, batch_size=2, num_workers=0).setup("fit")
    _save(tmp_path / "train" / "rain" / "rain-3.png", _image(7, 20, 20))
    with pytest.raises(DataError, match=r"rain-3\.png is 20x20, expected 12x14"):
        Rain100HDataModule(str(tmp_path), patch_size=8, batch_size=2, num_workers=0).setup("fit")
    (tmp_path / "train" / "norain" / "norain-2.png").write_bytes(b"broken")
    with pytest.raises(DataError, match=r"norain-2\.png"):
        Rain100HDataModule(str(tmp_path), patch_size=8, batch_size=2, num_workers=0).setup("fit")
    with pytest.raises(DataError, match="batch_size"):
        Rain100HDataModule(str(tmp_path), patch_size=8, batch_size=9, num_workers=0, verify=False).setup("fit")


@pytest.mark.parametrize("blur", ["blur", "blur_gamma"])
def test_gopro_datamodule_reads_the_chosen_blur(tmp_path, blur):
    for split in ("train", "test"):
        for scene in ("GOPR0001_00_00", "GOPR0002_00_00"):
            gt = _image(len(scene) + len(split))
            _save(tmp_path / "GOPRO_Large" / split / scene / "sharp" / "000001.png", gt)
            _save(tmp_path / "GOPRO_Large" / split / scene / "blur" / "000001.png", gt // 2)
            _save(tmp_path / "GOPRO_Large" / split / scene / "blur_gamma" / "000001.png", gt // 4)
    dm = GoProDataModule(str(tmp_path), blur=blur, patch_size=16, batch_size=2, num_workers=0)
    dm.setup("test")
    batch = _first_batch(dm, "test")
    divisor = 2 if blur == "blur" else 4
    expected = torch.floor(batch["gt"] * 255 / divisor) / 255
    torch.testing.assert_close(batch["lq"], expected, atol=1e-6, rtol=0)
    assert batch["name"] == ["GOPR0001_00_00/000001"] and dm.metric_y_channel is False


@pytest.mark.parametrize("with_lr", [True, False])
@pytest.mark.parametrize("upsample", [False, True])
def test_div2k_datamodule_lr_from_files_or_on_the_fly(tmp_path, with_lr, upsample):
    for tag, ids in (("train", ("0001", "0002")), ("valid", ("0801",))):
        for i in ids:
            hr = _image(int(i))
            _save(tmp_path / f"DIV2K_{tag}_HR" / f"{i}.png", hr)
            if with_lr:
                lr = np.round(_block_mean(hr.astype(np.float64), 4)).astype(np.uint8)
                _save(tmp_path / f"DIV2K_{tag}_LR_bicubic" / "X4" / f"{i}x4.png", lr)
    dm = DIV2KDataModule(str(tmp_path), scale=4, upsample_lq=upsample, patch_size=16, batch_size=2,
                         num_workers=0)
    dm.setup("fit")
    batch = _first_batch(dm)
    _check_batch(batch, 2, (16, 16), None if upsample else (4, 4))
    if with_lr and not upsample:
        means = torch.nn.functional.avg_pool2d(batch["gt"], 4)
        torch.testing.assert_close(batch["lq"], means, atol=0.5 / 255 + 1e-6, rtol=0)
    dm.setup("test")
    test = _first_batch(dm, "test")
    _check_batch(test, 1, (H, W), None if upsample else (H // 4, W // 4))
    assert dm.metric_y_channel is True and dm.metric_crop_border == 4


def test_celebahq_datamodule_with_mask_folder_and_generated_masks(tmp_path):
    for i in range(6):
        _save(tmp_path / "CelebA-HQ-img" / f"{i}.jpg", _image(i))
    masks = []
    for i in range(3):
        keep = np.random.default_rng(50 + i).random((64, 64)) > 0.3
        masks.append(_save(tmp_path / "masks" / "thin" / f"{i:06d}.png", (keep * 255).astype(np.uint8)))
    options = dict(split_ranges={"train": [0, 3], "test": [4, 5]}, image_size=32, patch_size=16, batch_size=2,
                   num_workers=0)
    dm = CelebAHQDataModule(str(tmp_path), mask_root=str(tmp_path / "masks"), mask_kind="thin", **options)
    dm.setup("fit")
    batch = _first_batch(dm)
    _check_batch(batch, 2, (16, 16))
    mask = batch["mask"]
    assert mask.shape == (2, 1, 16, 16) and set(mask.unique().tolist()) <= {0.0, 1.0}
    torch.testing.assert_close(batch["lq"], batch["gt"] * mask + (1 - mask))
    dm.setup("test")
    test_set = dm.test_set
    assert [test_set[i]["name"] for i in range(2)] == ["4", "5"]
    item = test_set[1]
    assert item["gt"].shape == (3, 32, 32)
    np.testing.assert_array_equal(item["mask"][0].numpy(), read_mask(masks[1], (32, 32)))  # image 1 -> mask 1
    generated = CelebAHQDataModule(str(tmp_path), generated_mask="strokes", **options)
    generated.setup("test")
    a, b = generated.test_set[0], generated.test_set[0]
    torch.testing.assert_close(a["mask"], b["mask"])
    assert 0 < float(a["mask"].mean()) < 1 and generated.metric_y_channel is False
    with pytest.raises(DataError, match="gt_keep_masks"):
        CelebAHQDataModule(str(tmp_path), mask_root=str(tmp_path / "nothing"), **options).setup("test")


def test_denoising_and_folder_pair_datamodules(tmp_path):
    for split in ("train", "test"):
        for i in range(2):
            _save(tmp_path / "clean" / split / f"{i}.png", _image(i + 3 * len(split)))
    dm = DenoisingDataModule(str(tmp_path / "clean"), sigma=25, patch_size=16, batch_size=2, num_workers=0)
    dm.setup("fit")
    batch = _first_batch(dm)
    _check_batch(batch, 2, (16, 16))
    residual = batch["lq"] - batch["gt"]
    assert 0.7 * 25 / 255 < float(residual.std()) < 1.3 * 25 / 255
    dm.setup("test")
    again = DenoisingDataModule(str(tmp_path / "clean"), sigma=25, num_workers=0)
    again.setup("test")
    torch.testing.assert_close(dm.test_set[1]["lq"], again.test_set[1]["lq"])
    for i in range(3):
        gt = _image(40 + i)
        _save(tmp_path / "pairs" / "gt" / f"{i}.png", gt)
        _save(tmp_path / "pairs" / "lq" / f"{i}_rain.png", 255 - gt)
    folders = FolderPairDataModule(str(tmp_path / "pairs" / "lq"), str(tmp_path / "pairs" / "gt"),
                                   patch_size=16, batch_size=2, num_workers=0, metric_y_channel=True,
                                   metric_crop_border=2)
    folders.setup("fit")
    batch = _first_batch(folders)
    torch.testing.assert_close(batch["lq"], 1.0 - batch["gt"], atol=1e-6, rtol=0)
    assert folders.metric_y_channel is True and folders.metric_crop_border == 2


# ---------------------------------------------------------------------------------------------------------
# Demo
# ---------------------------------------------------------------------------------------------------------
def test_demo_split_is_disjoint_and_deterministic():
    assert not set(TRAIN_PHOTOS) & set(TEST_PHOTOS) and 4 <= len(TEST_PHOTOS) <= 8
    test = build_demo_split("noise", "test")
    assert [test[i]["name"] for i in range(len(test))] == list(TEST_PHOTOS)
    train = build_demo_split("noise", "train", train_samples=16)
    assert len(train) == 16 and {train[i]["name"] for i in range(16)} <= set(TRAIN_PHOTOS)
    again = build_demo_split("noise", "test")
    for i in range(len(test)):
        torch.testing.assert_close(test[i]["lq"], again[i]["lq"])
    assert not torch.equal(train[0]["lq"] - train[0]["gt"], train[0]["lq"] - train[0]["gt"])


@pytest.mark.parametrize("task", TASKS)
def test_demo_datamodule_batches(task):
    dm = DemoDataModule(task=task, patch_size=32, image_size=64, train_samples=4, batch_size=2,
                        val_max_images=2)
    dm.setup("fit")
    batch = _first_batch(dm)
    _check_batch(batch, 2, (32, 32))
    assert ("mask" in batch) == (task == "inpaint")
    val = _first_batch(dm, "val")
    _check_batch(val, 1, (64, 64))
    assert len(dm.val_set) == 2 and dm.name == f"demo-{task}"
    assert not torch.allclose(val["lq"], val["gt"])  # the degradation is applied
    assert dm.metric_crop_border == (4 if task == "sr" else 0)
