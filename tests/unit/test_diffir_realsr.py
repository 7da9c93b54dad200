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


def test_gan_stage_refuses_gt_usm():
    from diffir.discriminators import UNetDiscriminatorSN
    from diffir.networks import DiffIRS2

    with pytest.raises(ConfigError, match="gt_usm"):
        RealSRStage2GANModule(DiffIRS2(scale=4, **TINY_NET), UNetDiscriminatorSN(num_feat=4),
                              optimizer_d=lambda p: torch.optim.Adam(p), degradation={"gt_usm": True})


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
