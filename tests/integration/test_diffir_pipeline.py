"""DiffIR end to end on tiny demo data: train.py stage 1 -> stage 2 -> evaluate.py, the two stage-2 phases
through Lightning, progressive patches, exact resume of stage 2, and clear errors for a wrong stage-1 file."""

from __future__ import annotations

import json
import os
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import lightning as L  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402

from core.cli import CONFIG_DIR  # noqa: E402
from core.errors import ConfigError  # noqa: E402
from tests.integration.conftest import run_tree  # noqa: E402

# 2 batches an epoch, so the step-2 checkpoint ends an epoch
TINY = [
    "model.net.dim=8", "model.net.num_blocks=[1,1,1,1]", "model.net.heads=[1,1,1,1]",
    "model.net.num_refinement_blocks=1", "model.net.n_encoder_res=1", "model.val_panels=2",
    "data.patch_size=32", "data.image_size=32", "data.train_samples=8", "data.batch_size=4",
    "trainer.max_steps=4", "trainer.val_check_interval=2", "trainer.precision=32",
    "trainer.log_every_n_steps=1", "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false",
    "trainer.num_sanity_val_steps=0", "trainer.accelerator=cpu", "logger=csv",
    "callbacks.checkpoint.save_top_k=-1",
]
# stage 1 with a two-stage progressive schedule: iterations 1-2 at 16 px / batch 2, then 32 px / batch 4
PROGRESSIVE = [
    "+callbacks.progressive._target_=diffir.module.ProgressivePatches", "+callbacks.progressive.iters=[2,2]",
    "+callbacks.progressive.patch_sizes=[16,32]", "+callbacks.progressive.batch_sizes=[2,4]",
    "+callbacks.probe._target_=tests.integration.test_diffir_pipeline.BatchShapes",
]


class BatchShapes(L.Callback):
    """Records the GT shape each training step saw (after the progressive crop, which works in place)."""

    seen: list[tuple[int, ...]] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        BatchShapes.seen.append(tuple(batch["gt"].shape))


def diffir_config(experiment: str, out_dir: Path, *overrides: str):
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose("train", overrides=[f"experiment={experiment}", *TINY, f"paths.output_dir={out_dir}",
                                           *overrides])


def _load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=False)


def _step_ckpt(run: Path, step: int) -> Path:
    return next((run / "checkpoints").glob(f"best-step{step:07d}*.ckpt"))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Stage 1 (4 steps) and stage 2 from it (encoder_iter 3: iterations 1-2 phase 1, 3-4 joint)."""
    from train import train

    root = tmp_path_factory.mktemp("diffir")
    BatchShapes.seen = []
    train(diffir_config("diffir_s1_demo", root / "s1", *PROGRESSIVE))
    shapes = list(BatchShapes.seen)
    stage1 = root / "s1" / "checkpoints" / "last.ckpt"
    train(diffir_config("diffir_s2_demo", root / "s2", f"model.stage1_ckpt={stage1}", "model.encoder_iter=3"))
    return {"root": root, "s1": root / "s1", "s2": root / "s2", "stage1": stage1, "s1_shapes": shapes}


def test_stage1_trains_with_the_progressive_schedule(runs):
    assert runs["s1_shapes"] == [(2, 3, 16, 16)] * 2 + [(4, 3, 32, 32)] * 2
    ckpt = _load(runs["stage1"])
    assert ckpt["global_step"] == 4 and ckpt["config"]["model"]["net"]["dim"] == 8
    assert any(k.startswith("ema_net.E.") for k in ckpt["state_dict"])


def test_stage2_phase1_keeps_the_stage1_dirformer_and_phase2_trains_it(runs):
    s1 = _load(runs["stage1"])["state_dict"]
    after_phase1 = _load(_step_ckpt(runs["s2"], 2))["state_dict"]
    after_phase2 = _load(runs["s2"] / "checkpoints" / "last.ckpt")["state_dict"]
    g_keys = [k[len("ema_net.G."):] for k in s1 if k.startswith("ema_net.G.")]
    assert g_keys
    for key in g_keys:  # initialised from the stage-1 EMA DIRformer, untouched by phase 1
        assert torch.equal(after_phase1[f"net.G.{key}"], s1[f"ema_net.G.{key}"]), key
    assert any(not torch.equal(after_phase2[f"net.G.{key}"], s1[f"ema_net.G.{key}"]) for key in g_keys)
    e_keys = [k[len("ema_net.E."):] for k in s1 if k.startswith("ema_net.E.")]
    for key in e_keys:  # the teacher is CPEN_S1, frozen throughout
        assert torch.equal(after_phase2[f"teacher.{key}"], s1[f"ema_net.E.{key}"]), key
    cond = [k for k in after_phase1 if k.startswith("net.condition.")]
    assert any(not torch.equal(after_phase1[k], after_phase2[k]) for k in cond)
    # the joint phase starts a fresh Adam, as the official second optimizer: 2 steps of moments everywhere
    adam = _load(runs["s2"] / "checkpoints" / "last.ckpt")["optimizer_states"][0]["state"]
    assert adam and {int(state["step"]) for state in adam.values()} == {2}


def test_evaluate_stage2_checkpoint(runs, tmp_path):
    import evaluate

    out = tmp_path / "eval"
    ckpt = runs["s2"] / "checkpoints" / "last.ckpt"
    summary = evaluate.main([f"ckpt={ckpt}", f"out={out}", "progress=false", "perceptual=false"])
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["n_images"] == 5 and saved["nfe"] == 4
    for key in ("psnr", "ssim", "psnr_input"):
        assert np.isfinite(saved[key]) and saved[key] == pytest.approx(summary[key])
    assert len(list((out / "images").glob("*.png"))) == 5


def test_exported_stage2_checkpoint_restores_without_its_teacher(runs, tmp_path):
    """scripts/export_checkpoint.py keeps the EMA network only: the teacher CPEN (training only) may be absent."""
    from core.loading import module_from_checkpoint
    from scripts.export_checkpoint import export

    exported = export(str(runs["s2"] / "checkpoints" / "last.ckpt"), str(tmp_path / "s2.ckpt"))
    assert not any(k.startswith("teacher.") for k in _load(exported)["state_dict"])
    module, _ = module_from_checkpoint(exported)
    full, _ = module_from_checkpoint(runs["s2"] / "checkpoints" / "last.ckpt")
    lq = torch.rand(1, 3, 32, 32)
    torch.testing.assert_close(module.restore(lq, generator=torch.Generator().manual_seed(0)),
                               full.restore(lq, generator=torch.Generator().manual_seed(0)))


def test_stage1_checkpoint_restores_with_the_ground_truth_prior(runs):
    from core.loading import module_from_checkpoint
    from data.demo import build_demo_split

    module, _ = module_from_checkpoint(runs["stage1"])
    item = build_demo_split("blur", "test", patch_size=32, image_size=32)[0]
    lq, gt = item["lq"][None], item["gt"][None]
    out = module.restore(lq, gt=gt)
    assert out.shape == gt.shape and torch.isfinite(out).all()
    with pytest.raises(ConfigError, match="gt="):
        module.restore(lq)


def test_stage2_resume_is_exact(runs, tmp_path):
    """Resuming from step 2 (before the phase switch) needs no stage-1 file and reaches the same weights."""
    from train import train

    out = tmp_path / "resumed"
    step2 = _step_ckpt(runs["s2"], 2)
    train(diffir_config("diffir_s2_demo", out, f"ckpt_path={step2}", "model.encoder_iter=3"))
    a = _load(runs["s2"] / "checkpoints" / "last.ckpt")
    b = _load(out / "checkpoints" / "last.ckpt")
    assert a["global_step"] == b["global_step"] == 4
    for key, value in a["state_dict"].items():
        torch.testing.assert_close(b["state_dict"][key], value, rtol=0, atol=0, msg=key)


@pytest.mark.parametrize(("override", "setting"), [("model.net.dim=16", "model.net.dim"),
                                                   ("data.task=rain", "data.task")])
def test_stage2_from_a_mismatched_stage1_fails_naming_the_setting(runs, tmp_path, override, setting):
    from train import train

    with pytest.raises(ConfigError, match=setting.replace(".", r"\.")):
        train(diffir_config("diffir_s2_demo", tmp_path, f"model.stage1_ckpt={runs['stage1']}", override))
    assert not (tmp_path / "checkpoints").exists()


def test_stage2_phase1_under_two_process_ddp(runs, tmp_path):
    """DDP refuses parameters outside the loss's graph: phase 1 must still run and leave the DIRformer be."""
    overrides = [o for o in TINY if not o.startswith("trainer.accelerator")]
    run_tree("train.py", "experiment=diffir_s2_demo", *overrides, "trainer=ddp", "trainer.devices=2",
             "trainer.accelerator=cpu", "data.train_samples=16", "model.encoder_iter=3",
             f"model.stage1_ckpt={runs['stage1']}", f"paths.output_dir={tmp_path}",
             f"hydra.run.dir={tmp_path / 'hydra'}")  # Hydra's own files stay out of the repository's runs/
    s1 = _load(runs["stage1"])["state_dict"]
    after_phase1 = _load(_step_ckpt(tmp_path, 2))["state_dict"]
    g_keys = [k[len("ema_net.G."):] for k in s1 if k.startswith("ema_net.G.")]
    assert all(torch.equal(after_phase1[f"net.G.{k}"], s1[f"ema_net.G.{k}"]) for k in g_keys)
    assert _load(tmp_path / "checkpoints" / "last.ckpt")["global_step"] == 4


def test_stage2_without_stage1_checkpoint_fails_clearly(tmp_path):
    from train import train

    with pytest.raises(ConfigError, match="model.stage1_ckpt="):
        train(diffir_config("diffir_s2_demo", tmp_path))
