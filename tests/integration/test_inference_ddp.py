"""evaluate.py and restore.py on 2 processes (CPU, gloo, Lightning's DDP launcher) give the files of 1 process,
bit for bit: every per-image number, the means, the PNGs and the preview (only the timing columns differ). A
restore killed mid-folder completes only the missing images when rerun; a corrupt image among good ones is
reported (failed.txt, non-zero exit) and the others are restored."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.integration.conftest import DIST_ENV, REPO, run_tree

IRSDE = "ckpt=assets/irsde_demo_denoise.ckpt"
TWO = ["trainer.devices=2", "trainer.accelerator=cpu", "trainer.strategy=ddp"]
TIMING = {"seconds", "seconds_per_image", "processes", "images_per_second"}


def _tables(out: Path) -> tuple[dict, list[dict]]:
    summary = {k: v for k, v in json.loads((out / "metrics.json").read_text()).items() if k not in TIMING}
    rows = [{k: v for k, v in r.items() if k not in TIMING} for r in csv.DictReader(open(out / "per_image.csv"))]
    return summary, rows


def _same_files(a: Path, b: Path, pattern: str) -> list[str]:
    names = sorted(p.name for p in a.glob(pattern))
    assert names and names == sorted(p.name for p in b.glob(pattern))
    for name in names:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    return names


@pytest.mark.parametrize("model", [
    [IRSDE, "sampler=mr_sde", "steps=3", "max_images=5"],  # a stochastic sampler
    ["model=diffpir", "prior_ckpt=assets/diffpir_demo_faces_prior.ckpt", "task=inpainting", "mask=box", "nfe=4",
     "max_images=5"],
], ids=["irsde-sde", "diffpir"])
def test_evaluate_on_two_processes_equals_one(tmp_path, model):
    one, two = tmp_path / "one", tmp_path / "two"
    common = ["evaluate.py", *model, "perceptual=false", "progress=false"]
    run_tree(*common, f"out={one}")
    log = run_tree(*common, f"out={two}", *TWO)
    assert _tables(one) == _tables(two)
    assert json.loads((two / "metrics.json").read_text())["processes"] == 2
    assert len(_same_files(one / "images", two / "images", "*.png")) == 5  # odd: shards of 3 and 2
    _same_files(one, two, "preview.png")
    assert log.count("wrote ") == 1  # rank 0 alone writes and reports
    assert not list(two.glob(".run-*"))  # the ranks' shared bookkeeping is removed


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    """7 small photos (an odd count: uneven shards)."""
    from core.io import write_image

    folder = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(0)
    for i in range(7):
        write_image(folder / f"photo{i}.png", rng.integers(0, 256, (24 + 4 * i, 32, 3), dtype=np.uint8))
    return folder


RESTORE = ["restore.py", IRSDE, "sampler=mr_sde", "steps=2", "progress=false"]


@pytest.fixture(scope="module")
def restored_once(photos, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("one")
    log = run_tree(*RESTORE, f"input={photos}", f"output={out}")
    assert "restored 7, skipped 0 (output exists; overwrite=true redoes them), failed 0 of 7" in log
    return out


def test_restore_on_two_processes_equals_one(photos, restored_once, tmp_path):
    log = run_tree(*RESTORE, f"input={photos}", f"output={tmp_path}", *TWO)
    assert len(_same_files(restored_once, tmp_path, "*.png")) == 7
    assert log.count("restored 7, skipped 0") == 1  # one closing line, counting both ranks


def test_a_killed_restore_completes_only_the_missing_images(photos, restored_once, tmp_path):
    from core.io import read_image

    env = {k: v for k, v in os.environ.items() if k not in DIST_ENV}
    env.update(NO_ALBUMENTATIONS_UPDATE="1", PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, *RESTORE, f"input={photos}", f"output={tmp_path}", "steps=6"],
                            cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while len(list(tmp_path.glob("*.png"))) < 2:
        assert proc.poll() is None and time.monotonic() < deadline, "no output before the kill"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = sorted(tmp_path.glob("*.png"))
    assert 2 <= len(done) < 7
    for path in done:  # every visible output is a whole image (writes go through a hidden file + rename)
        assert read_image(path).shape[:2] == read_image(photos / path.name).shape[:2]
    stamps = {p.name: p.stat().st_mtime_ns for p in done}
    log = run_tree(*RESTORE, f"input={photos}", f"output={tmp_path}", "steps=6")
    assert f"restored {7 - len(done)}, skipped {len(done)}" in log
    assert {p.name: p.stat().st_mtime_ns for p in done} == stamps  # the complete outputs were not redone
    log = run_tree(*RESTORE, f"input={photos}", f"output={tmp_path}", "steps=6", "overwrite=true")
    assert "restored 7, skipped 0" in log


def test_a_corrupt_image_is_reported_and_the_others_restored(photos, tmp_path):
    import shutil

    import restore
    from core.errors import DataError

    folder = tmp_path / "in"
    shutil.copytree(photos, folder)
    (folder / "photo3.png").write_bytes(b"not a png")
    out = tmp_path / "out"
    with pytest.raises(DataError, match=r"1 image\(s\) failed, listed in .*failed.txt: first photo3.png"):
        restore.main([*RESTORE[1:], f"input={folder}", f"output={out}"])
    assert sorted(p.name for p in out.glob("*.png")) == [f"photo{i}.png" for i in range(7) if i != 3]
    name, reason = (out / "failed.txt").read_text().strip().split("\t")
    assert name == "photo3.png" and "Cannot read image" in reason
    shutil.rmtree(out)
    with pytest.raises(DataError, match="on_error=stop"):
        restore.main([*RESTORE[1:], f"input={folder}", f"output={out}", "on_error=stop"])
    assert sorted(p.name for p in out.glob("*.png")) == ["photo0.png", "photo1.png", "photo2.png"]
