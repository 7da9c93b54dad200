"""DiffIR-RealSR recipe side: the training batch is replaced by the Real-ESRGAN degradation of its HR crops, seeded
by (seed, epoch, dataset index) only; the HR data modules hand HR crops and a fixed validation LQ."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from core.errors import ConfigError
from data.hr_datamodule import HRDataModule, RealESRGANLQ, meta_info_images
from data.realesrgan import DegradationOptions, degrade, sample_generators
from diffir.networks import DiffIRS1
from diffir.realsr import RealSRStage1Module, RealSRStage2GANModule

pytestmark = pytest.mark.usefixtures("one_thread")
TINY_NET = dict(dim=8, num_blocks=(1, 1, 1, 1), num_refinement_blocks=1, heads=(1, 1, 1, 1), n_encoder_res=1)


def _module(scale: int, **kw) -> RealSRStage1Module:
    torch.manual_seed(0)
    return RealSRStage1Module(DiffIRS1(scale=scale, **TINY_NET), degradation={"gt_size": 32},
                              degradation_seed=7, **kw)


def _batch(n: int = 3, size: int = 48) -> dict:
    g = torch.Generator().manual_seed(1)
    return {"gt": torch.rand(n, 3, size, size, generator=g), "lq": torch.zeros(n, 3, size, size),
            "index": torch.tensor([5, 11, 2][:n]), "name": ["a", "b", "c"][:n]}


@pytest.mark.parametrize("scale", [4, 2, 1])
def test_the_training_hook_replaces_the_batch_by_the_seeded_degradation(scale):
    module, batch = _module(scale), _batch()
    hr = batch["gt"].clone()
    module.on_train_batch_start(batch, 0)
    # independent: degrade() itself with the generators of (seed 7, epoch 0, index) of each sample
    options = DegradationOptions.from_config({"gt_size": 32})
    lq, gt = degrade(hr, sample_generators(7, 0, [5, 11, 2]), scale, options)
    assert batch["lq"].shape == (3, 3, 32 // scale, 32 // scale)
    assert torch.equal(batch["lq"], lq) and torch.equal(batch["gt"], gt)
    # 8-bit values, and a real degradation (not a resize of the GT crop)
    assert torch.equal(batch["lq"], (batch["lq"] * 255).round() / 255)
    plain = torch.nn.functional.interpolate(batch["gt"], scale_factor=1 / scale, mode="area")
    assert (batch["lq"] - plain).abs().mean() > 1e-3
    # the loss is computed on the degraded pair (the network would reject the HR-sized placeholder at x4)
    loss, _ = module.training_loss(batch)
    assert torch.isfinite(loss)


def test_each_sample_depends_on_its_index_only():
    module = _module(4)
    full = _batch(3)
    part = {k: (v[1:2] if isinstance(v, torch.Tensor) else v[1:2]) for k, v in full.items()}
    module.on_train_batch_start(full, 0)
    module.on_train_batch_start(part, 0)
    assert torch.equal(full["lq"][1:2], part["lq"])  # same pair whatever batch / rank / resume it lands in
    assert not torch.equal(full["lq"][0], full["lq"][1][: full["lq"].shape[1]])


def test_seed_defaults_to_the_run_seed():
    module = RealSRStage1Module(DiffIRS1(scale=4, **TINY_NET))
    module.run_config = {"seed": 123}
    assert module.seed == 123


def _gan_module(cls, **kw):
    from functools import partial

    from diffir.discriminators import UNetDiscriminatorSN
    from diffir.networks import DiffIRS2

    torch.manual_seed(0)
    module = cls(DiffIRS2(scale=4, **TINY_NET), UNetDiscriminatorSN(num_feat=4),
                 optimizer=partial(torch.optim.Adam, lr=1e-4), optimizer_d=partial(torch.optim.Adam, lr=1e-4), **kw)
    module.load_initial_weights = lambda *args, **kwargs: None  # random weights: no stage-2 file
    return module


def _one_gan_step(module, items: list[dict]) -> dict:
    """One training iteration; the targets the losses, the teacher and the discriminator saw, and the batch."""
    import lightning as L

    seen: dict = {"d": []}
    module.discriminator.register_forward_pre_hook(lambda _, args: seen["d"].append(args[0].detach().clone()))
    teacher_ipr, perceptual, pixel = module.teacher_ipr, module.perceptual_loss, module.pixel_loss

    def teacher_spy(inp, gt):
        seen["teacher"] = gt.detach().clone()
        return teacher_ipr(inp, gt)

    def perceptual_spy(restored, gt):
        seen["percep"] = gt.detach().clone()
        return perceptual(restored, gt)

    def pixel_spy(restored, gt, mask=None):
        seen["pix"] = gt.detach().clone()
        return pixel(restored, gt, mask)

    module.teacher_ipr, module.perceptual_loss, module.pixel_loss = teacher_spy, perceptual_spy, pixel_spy

    class Batch(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            seen["batch"] = {k: v.clone() for k, v in batch.items() if isinstance(v, torch.Tensor)}

    trainer = L.Trainer(max_steps=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                        num_sanity_val_steps=0, callbacks=[Batch()])
    trainer.fit(module, train_dataloaders=torch.utils.data.DataLoader(items, batch_size=len(items)))
    return seen


def _hr_items(n: int = 2, size: int = 48) -> list[dict]:
    g = torch.Generator().manual_seed(3)
    return [{"gt": torch.rand(3, size, size, generator=g), "lq": torch.zeros(3, size, size), "index": i}
            for i in range(n)]


def test_gan_v2_sharpened_pixel_perceptual_and_teacher_target_plain_discriminator_target():
    from data.realesrgan import usm_sharpen

    options = {"gt_size": 32, "gt_usm": True}
    items = _hr_items()
    seen = _one_gan_step(_gan_module(RealSRStage2GANModule, degradation=options, degradation_seed=7), items)
    batch = seen["batch"]
    plain, sharp = batch["gt_plain"], batch["gt"]
    # the official S2-GAN target: the USM of the GT crop (sharpened again after the crop), differs from the plain
    assert torch.equal(sharp, usm_sharpen(plain)) and (sharp - plain).abs().max() > 1e-2
    # the LQ is degraded from the sharpened full HR image (official l1_gt_usm True): degrade() with gt_usm
    hr = torch.stack([item["gt"] for item in items])
    expected = degrade(hr, sample_generators(7, 0, [0, 1]), 4, DegradationOptions.from_config(options))
    assert torch.equal(batch["lq"], expected.lq) and torch.equal(plain, expected.gt_plain)
    assert torch.equal(seen["pix"], sharp) and torch.equal(seen["percep"], sharp)
    assert torch.equal(seen["teacher"], sharp)
    # the discriminator: D(output) for the generator, then D(real) = the plain GT, then D(output.detach())
    assert len(seen["d"]) == 3 and torch.equal(seen["d"][1], plain) and not torch.equal(seen["d"][1], sharp)


def test_gan_gt_usm_true_gives_the_discriminator_the_sharpened_gt():
    seen = _one_gan_step(_gan_module(RealSRStage2GANModule, degradation={"gt_size": 32, "gt_usm": True},
                                     gan_gt_usm=True), _hr_items())
    assert torch.equal(seen["d"][1], seen["batch"]["gt"])
    assert not torch.equal(seen["d"][1], seen["batch"]["gt_plain"])
    with pytest.raises(ConfigError, match="gan_gt_usm=true needs model.degradation.gt_usm=true"):
        _gan_module(RealSRStage2GANModule, degradation={"gt_usm": False}, gan_gt_usm=True)


def test_gan_without_gt_usm_and_plain_s2gan_batches_are_unchanged():
    from diffir.stage2_gan import DiffIRStage2GANModule

    seen = _one_gan_step(_gan_module(RealSRStage2GANModule, degradation={"gt_size": 32}), _hr_items())
    batch = seen["batch"]
    assert torch.equal(batch["gt"], batch["gt_plain"])  # official train_DiffIRS2_GAN_x*.yml: nothing sharpened
    assert torch.equal(seen["d"][1], batch["gt"]) and torch.equal(seen["pix"], batch["gt"])
    # a paired (non-RealSR) S2-GAN batch has no gt_plain: every target is its gt, whatever gan_gt_usm
    g = torch.Generator().manual_seed(4)
    items = [{"lq": torch.rand(3, 8, 8, generator=g), "gt": torch.rand(3, 32, 32, generator=g)} for _ in range(2)]
    for gan_gt_usm in (False, True):
        seen = _one_gan_step(_gan_module(DiffIRStage2GANModule, gan_gt_usm=gan_gt_usm), items)
        gt = seen["batch"]["gt"]
        assert torch.equal(seen["d"][1], gt) and torch.equal(seen["pix"], gt) and torch.equal(seen["teacher"], gt)


def _write(path, rng, size=40):
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(path)


def test_hr_datamodule_meta_info_and_fixed_validation_lq(tmp_path):
    rng = np.random.default_rng(0)
    for name in ("sub/a.png", "sub/b.png", "c.png"):
        _write(tmp_path / "hr" / name, rng)
    for name in ("v1.png", "v2.png"):
        _write(tmp_path / "val" / name, rng)
    meta = tmp_path / "meta.txt"
    meta.write_text("sub/b.png (40,40,3)\nc.png (40,40,3)\n")
    assert [p.name for p in meta_info_images(tmp_path / "hr", meta)] == ["b", "c"]
    dm = HRDataModule(root=str(tmp_path / "hr"), meta_info=str(meta), test_root=str(tmp_path / "val"),
                      patch_size=32, batch_size=2, num_workers=0, verify=False)
    dm.setup("fit")
    item = dm.train_set[0]
    assert item["gt"].shape == (3, 32, 32) and torch.equal(item["lq"], item["gt"])  # HR crop, placeholder LQ
    val = dm.val_set[1]
    assert val["lq"].shape == (3, 10, 10)
    # independent: the whole-image degradation seeded by (val_seed 0, epoch 0, index 1)
    expected = degrade(val["gt"][None], sample_generators(0, 0, [1]), 4,
                       DegradationOptions.from_config({"gt_size": None})).lq[0]
    assert torch.equal(val["lq"], expected) and torch.equal(dm.val_set[1]["lq"], val["lq"])
    lq_fn = RealESRGANLQ(4)
    assert lq_fn(val["gt"].permute(1, 2, 0).numpy(), 1).shape == (10, 10, 3)
