"""DiffIR-RealSR end to end on the demo photographs: train.py S1 -> S2 -> S2-GAN with the Real-ESRGAN degradation
made in each training step, evaluate.py on the S2-GAN checkpoint, and exact extension of a run (3 then 7 steps
equals 7 straight, bit for bit)."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402

from core.cli import CONFIG_DIR  # noqa: E402
from tests.integration.test_diffir_gan import write_random_vgg19  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")
TINY = [
    "model.net.dim=8", "model.net.num_blocks=[1,1,1,1]", "model.net.heads=[1,1,1,1]",
    "model.net.num_refinement_blocks=1", "model.net.n_encoder_res=1", "model.val_panels=1",
    "model.degradation.gt_size=32", "data.patch_size=48", "data.image_size=48", "data.train_samples=12",
    "data.batch_size=4", "data.val_max_images=1", "trainer.max_steps=2", "trainer.val_check_interval=2",
    "trainer.precision=32", "trainer.log_every_n_steps=1", "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false", "trainer.num_sanity_val_steps=0", "trainer.accelerator=cpu", "logger=csv",
]


def config(experiment: str, out_dir: Path, *overrides: str):
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose("train", overrides=[f"experiment={experiment}", *TINY, f"paths.output_dir={out_dir}",
                                           *overrides])


def _ckpt(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=False)




def test_s1_s2_s2gan_then_evaluate(tmp_path, monkeypatch):
    import evaluate
    from train import train

    train(config("diffir_realsr_demo_s1", tmp_path / "s1"))
    s1 = tmp_path / "s1" / "checkpoints" / "last.ckpt"
    train(config("diffir_realsr_demo_s2", tmp_path / "s2", f"model.stage1_ckpt={s1}", "model.encoder_iter=2"))
    s2 = tmp_path / "s2" / "checkpoints" / "last.ckpt"
    vgg = write_random_vgg19(tmp_path / "vgg.pth")
    train(config("diffir_realsr_demo_s2gan", tmp_path / "gan", f"model.stage2_ckpt={s2}",
                 f"model.perceptual.weights_path={vgg}", "model.discriminator.num_feat=4"))
    gan = tmp_path / "gan" / "checkpoints" / "last.ckpt"
    state = _ckpt(gan)
    assert state["global_step"] == 2 and any(k.startswith("discriminator.") for k in state["state_dict"])
    summary = evaluate.main([f"ckpt={gan}", f"out={tmp_path / 'eval'}", "progress=false", "perceptual=false",
                             "data.val_max_images=1"])
    assert summary is not None


def test_the_step_trains_on_degraded_pairs(tmp_path, monkeypatch):
    from diffir.realsr import RealSRStage1Module
    from train import train

    seen = []
    original = RealSRStage1Module.training_loss

    def spy(self, batch):
        seen.append((tuple(batch["lq"].shape), tuple(batch["gt"].shape)))
        return original(self, batch)

    monkeypatch.setattr(RealSRStage1Module, "training_loss", spy)
    train(config("diffir_realsr_demo_s1", tmp_path / "s1", "trainer.max_steps=1", "trainer.limit_val_batches=0",
                 "trainer.val_check_interval=null"))
    assert seen == [((4, 3, 8, 8), (4, 3, 32, 32))]  # 48 px HR crops -> degraded, cropped to 32 / LR 8


def test_extending_a_run_is_exact(tmp_path):
    from train import train

    common = ["trainer.limit_val_batches=0", "trainer.val_check_interval=null", "data.train_samples=20"]
    train(config("diffir_realsr_demo_s1", tmp_path / "full", *common, "trainer.max_steps=7"))
    train(config("diffir_realsr_demo_s1", tmp_path / "short", *common, "trainer.max_steps=3"))
    short = tmp_path / "short" / "checkpoints" / "last.ckpt"
    assert _ckpt(short)["global_step"] == 3
    train(config("diffir_realsr_demo_s1", tmp_path / "longer", *common, "trainer.max_steps=7",
                 f"ckpt_path={short}"))
    a = _ckpt(tmp_path / "full" / "checkpoints" / "last.ckpt")
    b = _ckpt(tmp_path / "longer" / "checkpoints" / "last.ckpt")
    # 20 samples at batch 4: stopped mid-epoch, extended across an epoch end
    assert a["global_step"] == b["global_step"] == 7
    for key, value in a["state_dict"].items():
        assert torch.equal(b["state_dict"][key], value), key


@pytest.mark.parametrize("scale", [4, 2, 1])
def test_v2_experiments_differ_from_v1_by_the_official_usm_options_only(scale):
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    def compose_(experiment: str, *overrides: str):
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
            return compose("train", overrides=[f"experiment={experiment}", *overrides])

    v1 = OmegaConf.to_container(compose_(f"diffir_realsr_s2gan_x{scale}"))
    v2 = OmegaConf.to_container(compose_(f"diffir_realsr_s2gan_x{scale}_v2"))
    # train_DiffIRS2_GAN_x*_V2.yml: l1_gt_usm / percep_gt_usm True, gan_gt_usm False; nothing else differs
    assert v2["model"].pop("gan_gt_usm") is False and v2["model"]["degradation"].pop("gt_usm") is True
    assert v1["model"]["degradation"].get("gt_usm", False) is False
    assert v2.pop("name") == f"{v1.pop('name')}_v2"
    assert v1 == v2
    tiny = [o for o in TINY if o.startswith("model.net.")]
    module = instantiate(compose_(f"diffir_realsr_s2gan_x{scale}_v2", *tiny).model)  # no refusal any more
    assert module.degradation.gt_usm and not module.gan_gt_usm
