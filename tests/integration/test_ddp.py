"""Two-process DDP on CPU (gloo), through the real entry point (python train.py trainer=ddp ...).

One tiny training run on 2 ranks, then `trainer.validate` of its last checkpoint on 1 and on 2 processes, each
process recording what it saw and wrote (tests/integration/ddp_probe.py). The checks: the ranks train on
disjoint shards of each epoch, made of exactly the items the epoch-seeded sampler defines; validation metrics
are reduced across ranks with every image counted once, so they equal the single-process numbers although the
distributed sampler repeats an image; only rank 0 writes checkpoints, panels and logs.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

from tests.integration.conftest import TINY, run_tree  # noqa: E402

SEED = 42
TRAIN_SAMPLES = 8  # 4 per rank = one batch of 4: two steps are two epochs
PATCH = IMAGE_SIZE = 32  # training patches as large as the (test) image size, both fixed here
PROBE = "tests.integration.ddp_probe.RankRecorder"


def read_ranks(folder: Path, tag: str, world_size: int) -> list[dict]:
    records = []
    for rank in range(world_size):
        path = folder / f"{tag}-rank{rank}.json"
        assert path.is_file(), f"rank {rank} left no record ({path})"
        records.append(json.loads(path.read_text()))
        assert records[-1]["rank"] == rank and records[-1]["world_size"] == world_size
    return records


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("ddp")
    run_dir, probe = root / "run", root / "probe"
    replaced = ("trainer.max_steps=", "data.train_samples=", "data.patch_size=", "data.image_size=")
    overrides = [o for o in TINY if not o.startswith(replaced)]
    run_tree("train.py", *overrides, "trainer=ddp", "trainer.devices=2", "trainer.max_steps=2",
             f"data.train_samples={TRAIN_SAMPLES}", f"data.patch_size={PATCH}",
             f"data.image_size={IMAGE_SIZE}", f"seed={SEED}",
             f"hydra.run.dir={run_dir}", f"+callbacks.probe._target_={PROBE}", "+callbacks.probe.tag=fit",
             f"+callbacks.probe.out_dir={probe}", f"+callbacks.probe.watch={run_dir}")
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    validations = {}
    for devices in (1, 2):
        out = root / f"validate{devices}"
        run_tree("tests/integration/ddp_probe.py", str(ckpt), str(out), str(devices))
        validations[devices] = (out, read_ranks(out, f"validate{devices}", devices))
    return {"run_dir": run_dir, "fit": read_ranks(probe, "fit", 2), "validate": validations}


def test_ranks_train_on_disjoint_shards_of_the_seeded_items(runs):
    from data.demo import build_demo_split
    from data.samplers import EpochSeededSampler

    ranks = runs["fit"]
    assert all(r["strategy"] == "DDPStrategy" for r in ranks)
    steps = [[b["step"] for b in r["train_batches"]] for r in ranks]
    assert steps == [[1, 2], [1, 2]], steps
    dataset = build_demo_split("rain", "train", patch_size=PATCH, image_size=IMAGE_SIZE,
                               train_samples=TRAIN_SAMPLES)
    for step in (0, 1):
        shards = [r["train_batches"][step] for r in ranks]
        assert {b["epoch"] for b in shards} == {step}
        first, second = (set(b["index"]) for b in shards)
        assert not first & second, f"both ranks trained on {first & second} in epoch {step}"
        assert first | second == set(range(TRAIN_SAMPLES)), "together the ranks cover the epoch"
        # What the epoch-seeded sampler defines for this epoch, computed here without Lightning: its
        # (index, sample seed) pairs must reach each rank's dataset intact (it is a DistributedSampler, used as is).
        sampler = EpochSeededSampler(TRAIN_SAMPLES, seed=SEED)
        sampler.set_epoch(step)
        seeds = dict(iter(sampler))
        for batch in shards:
            assert batch["gt_shape"] == batch["lq_shape"] == [4, 3, PATCH, PATCH]
            assert 0 < batch["loss"] < 10, "a finite training loss"
            expected = [float(dataset[(i, seeds[i])]["gt"].sum()) for i in batch["index"]]
            assert batch["gt_sums"] == pytest.approx(expected, rel=1e-5), "not the sampler's items"
    orders = [b["index"] for b in ranks[0]["train_batches"]]
    assert orders[0] != orders[1], "a new order every epoch"


def _rows_by_index(record: dict) -> dict[int, tuple[float, float]]:
    return {int(i): (psnr, ssim) for i, psnr, ssim in record["validations"][-1]["rows"]}


def test_validation_counts_every_image_once_and_matches_one_process(runs):
    (_, [single]), (_, pair) = runs["validate"][1], runs["validate"][2]
    reference = single["validations"][-1]
    assert reference["indices"] == [0, 1, 2, 3, 4]
    per_image = _rows_by_index(single)
    psnr_mean = sum(p for p, _ in per_image.values()) / 5
    ssim_mean = sum(s for _, s in per_image.values()) / 5
    assert reference["metrics"]["val/psnr"] == pytest.approx(psnr_mean, abs=1e-9)
    assert reference["metrics"]["val/ssim"] == pytest.approx(ssim_mean, abs=1e-9)
    # The training run validated on 2 ranks at step 2 with the weights last.ckpt holds: same numbers.
    for name, ranks in (("trainer.validate on 2 ranks", pair), ("validation inside fit", runs["fit"])):
        rows = [row for r in ranks for row in r["validations"][-1]["rows"]]
        indices = [int(row[0]) for row in rows]
        assert len(indices) == 6 and set(indices) == set(range(5)), f"{name}: 5 images padded to 3 per rank"
        for index, psnr, ssim in rows:  # each image restored with the same index-seeded noise on any rank
            assert (psnr, ssim) == pytest.approx(per_image[int(index)], abs=1e-9)
        naive = sum(row[1] for row in rows) / len(rows)
        assert abs(naive - psnr_mean) > 1e-4, "the repeated image biases a plain mean, else this test is void"
        for r in ranks:
            metrics = r["validations"][-1]["metrics"]
            assert metrics["val/psnr"] == pytest.approx(reference["metrics"]["val/psnr"], abs=1e-6), name
            assert metrics["val/ssim"] == pytest.approx(reference["metrics"]["val/ssim"], abs=1e-6), name


def test_only_rank_zero_writes_files(runs):
    from data.demo import TEST_PHOTOS

    rank0, rank1 = runs["fit"]
    assert rank1["written"] == [], f"rank 1 wrote {rank1['written']}"
    # the watcher does see writes: rank 0's checkpoints (atomic renames), metrics and panels
    seen = {entry.split(":", 1)[1] for entry in rank0["written"]}
    assert {"checkpoints/last.ckpt", "csv/metrics.csv"} <= seen
    run_dir = runs["run_dir"]
    files = sorted(str(p.relative_to(run_dir)) for p in run_dir.rglob("*") if p.is_file())
    panel_names = [TEST_PHOTOS[i] for i in rank0["validations"][-1]["indices"][:2]]  # model.val_panels=2
    expected = {".hydra/config.yaml", ".hydra/hydra.yaml", ".hydra/overrides.yaml", "checkpoints/last.ckpt",
                "checkpoints/step0000002.ckpt",
                "csv/metrics.csv", "csv/hparams.yaml", "train.log",
                *(f"panels/step0000002_{n}.png" for n in panel_names),
                # Lightning relaunches train.py for rank 1 with hydra.job.name=train_ddp_process_1: Hydra's
                # own log of that process, opened before any of our code runs. The only file of rank 1.
                "train_ddp_process_1.log"}
    best = [f for f in files if f.startswith("checkpoints/best-step0000002-")]
    assert len(best) == 1, files
    assert set(files) - set(best) == expected, files
    for devices in (1, 2):
        out, ranks = runs["validate"][devices]
        assert all(r["written"] == [] for r in ranks[1:])
        panels = sorted(p.name for p in (out / "root" / "panels").glob("*.png"))
        first_two = [TEST_PHOTOS[i] for i in ranks[0]["validations"][-1]["indices"][:2]]
        assert panels == sorted(f"step0000000_{n}.png" for n in first_two)
