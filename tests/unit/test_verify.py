"""data.verify: every training/validation file decoded once before training, cached; a file that goes bad later
stops the run with its name and the last checkpoint intact."""

from __future__ import annotations

import os
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from PIL import Image

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import data.verify  # noqa: E402
from core.checkpoint import AtomicCheckpointIO  # noqa: E402
from core.errors import DataError  # noqa: E402
from core.io import read_image  # noqa: E402
from data.datamodules import DemoDataModule, Rain100HDataModule  # noqa: E402
from data.verify import verify_images  # noqa: E402


@pytest.fixture(autouse=True)
def cache_home(tmp_path_factory, monkeypatch) -> Path:
    home = tmp_path_factory.mktemp("cache")
    monkeypatch.setenv("XDG_CACHE_HOME", str(home))
    return home


def _png(path: Path, seed: int, size: tuple[int, int] = (40, 48)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)).save(path)
    return path


def _rain_tree(root: Path) -> None:
    for split, n in (("train", 4), ("test", 2)):
        for i in range(1, n + 1):
            _png(root / split / "norain" / f"norain-{i}.png", i)
            _png(root / split / "rain" / f"rain-{i}.png", 10 + i)


def _cut(path: Path, size: int = 200) -> None:
    path.write_bytes(path.read_bytes()[:size])


class _CountingReader:
    def __init__(self) -> None:
        self.paths: list[Path] = []

    def __call__(self, path):
        self.paths.append(Path(path))
        return read_image(path)


def test_truncated_and_broken_files_are_found_with_a_reason(tmp_path):
    good = _png(tmp_path / "good.png", 0)
    short_png = _png(tmp_path / "short.png", 1)
    _cut(short_png)
    assert read_image(good).shape == (40, 48, 3)
    jpeg = tmp_path / "half.jpg"
    Image.open(good).save(jpeg, quality=90)
    _cut(jpeg, jpeg.stat().st_size // 2)
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"not an image")
    bad = verify_images([good, short_png, jpeg, junk, tmp_path / "gone.png"], tmp_path / "cache.json", workers=2)
    assert [(p.name, reason) for p, reason in bad] == [
        ("short.png", "image file is truncated"), ("half.jpg", bad[1][1]), ("junk.png", "not an image PIL "
         "recognises"), ("gone.png", "file not found")]
    assert "truncated" in bad[1][1]


def test_setup_names_a_png_cut_to_200_bytes_and_verify_false_skips(tmp_path, cache_home):
    _rain_tree(tmp_path)
    _cut(tmp_path / "train" / "norain" / "norain-2.png")
    options = dict(patch_size=16, batch_size=2, num_workers=0)
    with pytest.raises(DataError, match=r"1 of 12 .*norain-2\.png \(image file is truncated\).*data\.verify=false"):
        Rain100HDataModule(str(tmp_path), **options).setup("fit")
    dm = Rain100HDataModule(str(tmp_path), verify=False, **options)
    dm.setup("fit")  # the header checks alone let it through: the run would start and fail later
    assert len(dm.train_set) == 4
    assert not list(tmp_path.rglob("*.json"))  # the cache is kept out of the dataset
    assert list(cache_home.glob("image-restoration/verify/*.json"))


def test_the_cache_skips_checked_files_and_rechecks_changed_ones(tmp_path, monkeypatch):
    paths = [_png(tmp_path / f"{i}.png", i) for i in range(5)]
    cache = tmp_path / "cache" / "verify.json"
    reader = _CountingReader()
    assert verify_images(paths, cache, workers=2, decode=reader) == [] and len(reader.paths) == 5
    reader.paths.clear()
    assert verify_images(paths, cache, workers=2, decode=reader) == [] and reader.paths == []
    _png(paths[1], 99, size=(40, 40))  # rewritten: new size
    stat = paths[3].stat()
    os.utime(paths[3], ns=(stat.st_atime_ns, stat.st_mtime_ns + 1))  # touched: same size, new mtime
    _cut(paths[4])
    bad = verify_images(paths, cache, workers=2, decode=reader)
    assert sorted(p.name for p in reader.paths) == ["1.png", "3.png", "4.png"] and [p for p, _ in bad] == [paths[4]]
    reader.paths.clear()
    assert [p for p, _ in verify_images(paths, cache, decode=reader)] == [paths[4]]
    assert reader.paths == [paths[4]]  # a bad file is never cached as good
    cache.write_text("{not json")  # a damaged cache means one full check, not a crash
    assert verify_images(paths[:2], cache, decode=reader) == [] and len(reader.paths) == 3


def test_a_second_setup_decodes_nothing(tmp_path, monkeypatch):
    _rain_tree(tmp_path)
    reader = _CountingReader()
    monkeypatch.setattr(data.verify, "read_image", reader)
    dm = Rain100HDataModule(str(tmp_path), patch_size=16, batch_size=2, num_workers=0, val_max_images=1)
    dm.prepare_data()  # what Lightning runs once per node: fills the cache
    assert len(reader.paths) == 8 + 2  # train pairs + the one validation pair
    dm.setup("fit")
    Rain100HDataModule(str(tmp_path), patch_size=16, batch_size=2, num_workers=0, val_max_images=1).setup("fit")
    assert len(reader.paths) == 10


def test_demo_datamodules_have_nothing_to_verify(monkeypatch):
    def fail(path):
        raise AssertionError(f"decoded {path}")

    monkeypatch.setattr(data.verify, "read_image", fail)
    for options in (dict(task="rain"), dict(source="faces", task="inpaint", image_size=32, patch_size=32)):
        dm = DemoDataModule(train_samples=4, batch_size=2, val_max_images=1, verify=True, **options)
        dm.prepare_data()
        dm.setup("fit")
        assert dm.fit_files() == [] and len(dm.train_set) == 4


class _Tiny(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Conv2d(3, 3, 1)

    def training_step(self, batch, _):
        return torch.nn.functional.mse_loss(self.net(batch["lq"]), batch["gt"])

    def validation_step(self, batch, _):
        self.log("val/loss", torch.nn.functional.mse_loss(self.net(batch["lq"]), batch["gt"]), batch_size=1)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


class _CutAfterFirstEpoch(L.Callback):
    def __init__(self, path: Path) -> None:
        self.path = path

    def on_train_epoch_end(self, trainer, module):
        if trainer.current_epoch == 0:
            _cut(self.path)


def test_a_file_that_goes_bad_during_training_stops_the_run_by_name(tmp_path):
    _rain_tree(tmp_path / "data")
    bad = tmp_path / "data" / "train" / "rain" / "rain-3.png"
    dm = Rain100HDataModule(str(tmp_path / "data"), patch_size=16, batch_size=2, num_workers=1, val_max_images=1)
    checkpoints = L.pytorch.callbacks.ModelCheckpoint(tmp_path / "ckpt", monitor="val/loss", save_last=True)
    trainer = L.Trainer(max_epochs=3, accelerator="cpu", logger=False, enable_progress_bar=False,
                        enable_model_summary=False, num_sanity_val_steps=0, plugins=[AtomicCheckpointIO()],
                        callbacks=[checkpoints, _CutAfterFirstEpoch(bad)])
    with pytest.raises(DataError, match=rf"Cannot decode image {bad}.*truncated") as caught:
        trainer.fit(_Tiny(), datamodule=dm)  # raised in a DataLoader worker, re-raised here as a DataError
    assert "DataLoader worker" in str(caught.value)  # torch puts the worker's traceback in front of the message
    last = torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=False)
    assert last["epoch"] == 0 and last["global_step"] == 2  # the checkpoint of the last good validation
