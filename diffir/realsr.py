"""DiffIR-RealSR (Zj-BinXia/DiffIR, DiffIR-RealSR/): the three DiffIR recipes trained on Real-ESRGAN degradations.

The networks are those of DiffIR-SRGAN (the official ``archs/S1_arch.py`` / ``S2_arch.py`` of both sub-projects are
byte-identical): ``diffir.networks.DiffIRS1`` / ``DiffIRS2`` with ``scale`` 4, 2 or 1, whose DIRformer
pixel-unshuffles the LR input by 4 // scale. What RealSR adds is the data: the data module hands HR crops only
(``data=df2k``: ``lq`` is a copy of the HR crop), and before each training step the recipe replaces the pair by
``data.realesrgan.degrade`` of the HR crops, on the batch's device, as the official ``feed_data`` does.

Every random choice of sample i comes from a generator seeded by (seed, epoch, dataset index of sample i)
(``data.realesrgan.sample_generators``), so a resumed run and any DDP sharding see the same pairs as one
uninterrupted process. ``degradation_seed`` null uses the run's ``seed``.

Not reproduced: the official 180-pair training pool (``data.realesrgan.pool``; its mixing across batches breaks the
per-sample determinism).

S2-GAN's USM options (official ``l1_gt_usm`` / ``percep_gt_usm`` / ``gan_gt_usm``, DiffIRGANS2Model): official
``l1_gt_usm`` is ``model.degradation.gt_usm``. As there, it makes the LQ from the sharpened full HR image and makes
the sharpened GT the target of the pixel loss and the stage-1 teacher's GT; the perceptual loss uses the same
target (``percep_gt_usm`` equal to ``l1_gt_usm``, as in every official file). ``model.gan_gt_usm`` false (official,
default) gives the discriminator the plain GT. The train_DiffIRS2_GAN_x*.yml files set all three False; the *_V2
files set ``l1_gt_usm`` / ``percep_gt_usm`` True and ``gan_gt_usm`` False (experiment=diffir_realsr_s2gan_x*_v2).
As the official feed_data, which sharpens the cropped GT again after its pool, the S2-GAN target is the USM of the
GT crop (not the crop of the sharpened full image: they differ within the USM radius of the crop's edges).
"""

from __future__ import annotations

from typing import Any

from core.errors import ConfigError
from data.realesrgan import DegradationOptions, degrade, sample_generators, usm_sharpen
from diffir.stage1 import DiffIRStage1Module
from diffir.stage2 import DiffIRStage2Module
from diffir.stage2_gan import DiffIRStage2GANModule

DEFAULT_SEED = 0  # the official manual_seed, when neither degradation_seed nor a run seed is known


class RealESRGANTraining:
    """Mixin placed before a DiffIR LightningModule: degrades each training batch's HR crops in place.

    degradation: ``data.realesrgan.DegradationOptions`` or a dict of overrides (official key names; {} =
    DiffIR-RealSR's S1/S2 values, gt_size 256); degradation_seed: the seed mixed with (epoch, index) (null:
    the run's seed).
    """

    def __init__(self, *args: Any, degradation: dict | DegradationOptions | None = None,
                 degradation_seed: int | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # a dict of overrides, or the options object of configs/degradation/realesrgan.yaml when instantiated
        self.degradation = (degradation if isinstance(degradation, DegradationOptions)
                            else DegradationOptions.from_config(dict(degradation or {})))
        self.degradation_seed = degradation_seed

    @property
    def seed(self) -> int:
        if self.degradation_seed is not None:
            return int(self.degradation_seed)
        run_seed = (self.run_config or {}).get("seed")
        return DEFAULT_SEED if run_seed is None else int(run_seed)

    def setup(self, stage: str) -> None:
        dm = getattr(getattr(self, "_trainer", None), "datamodule", None)
        kind = getattr(dm, "degradation", None)
        if stage == "fit" and dm is not None and kind != "realesrgan":
            # a paired data module would have its LQ silently replaced: say so instead
            raise ConfigError(f"{type(self).__name__} degrades HR crops itself: use data=df2k (or data=demo_hr) "
                              f"with data.degradation=realesrgan (got data.degradation={kind!r})")
        super().setup(stage)

    def degrade_batch(self, batch: dict) -> dict:
        """{"lq", "gt", "gt_plain"} of a batch of HR crops (its "gt", with "index")."""
        if "index" not in batch:
            raise ConfigError("the Real-ESRGAN degradation is seeded by each sample's dataset index: the batch "
                              "has no 'index'")
        hr = batch["gt"]
        generators = sample_generators(self.seed, int(self.current_epoch), batch["index"])
        out = degrade(hr, generators, self.net.out_scale, self.degradation)
        return {"lq": out.lq.to(hr.dtype).contiguous(), "gt": out.gt.to(hr.dtype),
                "gt_plain": out.gt_plain.to(hr.dtype)}

    def on_train_batch_start(self, batch: dict, batch_idx: int) -> Any:
        result = super().on_train_batch_start(batch, batch_idx)
        # in place: Lightning passes this same dict to training_step
        batch.update(self.degrade_batch(batch))
        return result


class RealSRStage1Module(RealESRGANTraining, DiffIRStage1Module):
    """DiffIR-RealSR stage 1 (official DiffIRS1Model): L1 on degraded pairs."""


class RealSRStage2Module(RealESRGANTraining, DiffIRStage2Module):
    """DiffIR-RealSR stage 2 (official DiffIRS2Model): the two phases of ``diffir.stage2`` (encoder_iter 100000)."""


class RealSRStage2GANModule(RealESRGANTraining, DiffIRStage2GANModule):
    """DiffIR-RealSR S2-GAN (official DiffIRGANS2Model, train_DiffIRS2_GAN_x*.yml; with ``degradation.gt_usm``
    true and ``gan_gt_usm`` false, the *_V2 files): L1, perceptual and the teacher on ``gt`` (sharpened when
    gt_usm), the discriminator on ``gt_plain``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.gan_gt_usm and not self.degradation.gt_usm:
            raise ConfigError("model.gan_gt_usm=true needs model.degradation.gt_usm=true: a sharpened "
                              "discriminator target with a plain L1 target and LQ source (official l1_gt_usm "
                              "False, gan_gt_usm True) is not supported")

    def degrade_batch(self, batch: dict) -> dict:
        out = super().degrade_batch(batch)
        if self.degradation.gt_usm:
            # official feed_data: self.gt_usm = self.usm_sharpener(self.gt) on the cropped GT (after the pool)
            out["gt"] = usm_sharpen(out["gt_plain"].float()).to(out["gt_plain"].dtype)
        return out
