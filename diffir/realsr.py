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
per-sample determinism) and, for S2-GAN, a discriminator target different from the L1 / perceptual target
(``l1_gt_usm`` True with ``gan_gt_usm`` False, the *_V2 fine-tuning files): the official train_*.yml files used by
the experiments set every ``*_gt_usm`` False.
"""

from __future__ import annotations

from typing import Any

from core.errors import ConfigError
from data.realesrgan import DegradationOptions, degrade, sample_generators
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
        return {"lq": out.lq.to(hr.dtype).contiguous(), "gt": out.gt.to(hr.dtype), "gt_plain": out.gt_plain}

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
    """DiffIR-RealSR S2-GAN (official DiffIRGANS2Model, train_DiffIRS2_GAN_x*.yml)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.degradation.gt_usm:
            raise ConfigError("model.degradation.gt_usm=true is not supported for the S2-GAN stage: the official "
                              "V2 recipe trains L1/perceptual on the sharpened GT but the discriminator on the "
                              "plain one, which diffir.stage2_gan does not separate yet")

