"""DiffIR inpainting stage 2 (``diffir.inpaint.DiffIRInpaintS2Module``, the LaMa recipe): the IPR loss's gradient
reaches CPEN_S2 and the IPR denoiser in its joint phase, as in the official defaultS2 trainer (l_abs between the
stage-2 and the frozen stage-1 IPR is part of the generator loss, the whole T-step chain in the graph).

The recipe's real ``training_step`` runs inside a one-step Lightning fit on CPU; a subclass records the generator's
gradients the moment before they are clipped and stepped (``_clip`` of the generator optimizer), and fixes the
chain's q_sample noise by seeding the global RNG before each ``generate``. Two ways to isolate the IPR loss:

* every other generator loss weighted 0 (pixel, adversarial, feature matching; no perceptual encoder): CPEN_S2's
  and the denoiser's gradients equal d/dθ mean |IPR_S2(θ) - IPR_S1|, recomputed with autograd on a copy of the
  network through its public ``forward_train``; the DIRformer, the teacher and the discriminator get nothing;
* the official weights (pixel 1, known x10 / missing x0, adversarial 10, feature matching 100), IPR-loss weight 1
  against 0: the difference of the two runs' gradients is that same IPR-loss gradient.

A detached IPR (``self.ipr_loss(ipr.detach(), ...)``) leaves zero IPR-loss gradient and fails both.
"""

from __future__ import annotations

import copy
import os
from functools import partial

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import lightning as L  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

from diffir.inpaint import DiffIRInpaintS2Module  # noqa: E402
from diffir.lama_discriminator import NLayerDiscriminator  # noqa: E402
from diffir.networks import DiffIRS2  # noqa: E402
from tests.unit.test_diffir_module import TINY, _jitter, _stage1_file  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

STUDENT = ("condition.", "denoise.")
CHAIN_SEED = 11
OFFICIAL = dict(pixel=1.0, adversarial=10.0, feature_matching=100.0)


class Recording(DiffIRInpaintS2Module):
    """The recipe unchanged, plus: the generator's gradients as clipped and stepped, and a fixed chain noise."""

    def generate(self, batch):
        torch.manual_seed(CHAIN_SEED)  # the training chain's q_sample noise comes from the global RNG
        return super().generate(batch)

    def _clip(self, optimizer):
        if not hasattr(self, "generator_grads"):  # the first call of the iteration: the generator's optimizer
            self.generator_grads = {k: None if p.grad is None else p.grad.detach().clone()
                                    for k, p in self.named_parameters()}
        super()._clip(optimizer)


def _batch(n: int = 2, size: int = 32) -> dict:
    gen = torch.Generator().manual_seed(3)
    gt = torch.rand(n, 3, size, size, generator=gen)
    known = (torch.rand(n, 1, size, size, generator=gen) > 0.4).float()
    return {"lq": gt * known + (1 - known), "gt": gt, "mask": known}  # missing pixels white, as data.masks


def _run(tmp_path, ipr: float, pixel: float, adversarial: float, feature_matching: float
         ) -> tuple[Recording, torch.nn.Module, torch.nn.Module]:
    """(module after one training iteration, a copy of its network as it was before, the stage-1 network)."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)  # the networks' initial weights (then jittered): the same in every run
    s1, path = _stage1_file(tmp_path, inp_channels=4)
    module = Recording(
        _jitter(DiffIRS2(inp_channels=4, **TINY), 2), stage1_ckpt=str(path),
        discriminator=NLayerDiscriminator(3, ndf=8, n_layers=2),
        optimizer=partial(torch.optim.Adam, lr=1e-3), optimizer_d=partial(torch.optim.Adam, lr=1e-3),
        pixel_loss={"weight": pixel, "known_weight": 10.0, "missing_weight": 0.0},
        adversarial={"weight": adversarial}, feature_matching={"weight": feature_matching}, hrf_perceptual=None,
        kd={"weight": ipr, "backprop": "l_abs"}, ema={"decay": 0})
    before = copy.deepcopy(module.net)  # the DIRformer differs (stage-1 weights are loaded in setup): unused here
    trainer = L.Trainer(accelerator="cpu", devices=1, max_steps=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                        limit_val_batches=0, default_root_dir=tmp_path)
    trainer.fit(module, train_dataloaders=DataLoader([_batch()], batch_size=None))  # one ready-made batch
    assert trainer.global_step == 1 and hasattr(module, "generator_grads")
    return module, before, s1


def _ipr_loss_gradient(before: torch.nn.Module, s1: torch.nn.Module) -> dict[str, torch.Tensor]:
    """d/dθ mean |IPR_S2(θ) - IPR_S1| for θ in CPEN_S2 and the denoiser, on the network as it was before the step."""
    batch = _batch()
    known = batch["mask"]
    inp = torch.cat([batch["lq"] * known, 1 - known], dim=1)  # the inpainting input: masked image + hole mask
    with torch.no_grad():
        target = s1.encode(inp, batch["gt"])
    torch.manual_seed(CHAIN_SEED)
    _, ipr, _ = before.forward_train(inp, target)
    loss = (ipr - target).abs().mean()
    params = {k: p for k, p in before.named_parameters() if k.startswith(STUDENT)}
    return {f"net.{k}": g for k, g in zip(params, torch.autograd.grad(loss, list(params.values())))}


def _norm(grads: dict[str, torch.Tensor | None], prefix: str) -> float:
    return sum(float(g.norm()) ** 2 for k, g in grads.items() if k.startswith(prefix) and g is not None) ** 0.5


def test_ipr_loss_alone_trains_cpen_s2_and_the_denoiser_in_the_joint_phase(tmp_path):
    module, before, s1 = _run(tmp_path, ipr=1.0, pixel=0.0, adversarial=0.0, feature_matching=0.0)
    assert module.encoder_iter == 0  # the official inpainting stage 2: joint from the first step
    got, expected = module.generator_grads, _ipr_loss_gradient(before, s1)
    assert {k.split(".")[1] for k in expected} == {"condition", "denoise"}
    for prefix in ("net.condition.", "net.denoise."):
        assert _norm(got, prefix) > 1e-5, f"no IPR-loss gradient reaches {prefix[4:-1]} ({_norm(got, prefix):.3g})"
    for name, g in expected.items():
        assert got[name] is not None, f"{name}: no gradient"
        torch.testing.assert_close(got[name], g, rtol=1e-4, atol=1e-7, msg=name)
    # nothing else in the generator loss: the DIRformer gets zero, the frozen teacher and discriminator nothing
    assert _norm(got, "net.G.") == 0.0
    assert all(got[k] is None for k in got if k.startswith(("teacher.", "discriminator.")))


def test_ipr_loss_adds_its_gradient_to_the_full_official_generator_loss(tmp_path):
    on, before, s1 = _run(tmp_path / "on", ipr=1.0, **OFFICIAL)
    off, _, _ = _run(tmp_path / "off", ipr=0.0, **OFFICIAL)
    expected = _ipr_loss_gradient(before, s1)
    for prefix in ("net.condition.", "net.denoise."):
        assert _norm(off.generator_grads, prefix) > 1e-5, prefix  # the other losses reach them too (through G)
    scale = max(float(g.abs().max()) for k, g in on.generator_grads.items() if k in expected)
    for name, g in expected.items():
        difference = on.generator_grads[name] - off.generator_grads[name]
        torch.testing.assert_close(difference, g, rtol=1e-4, atol=1e-6 * scale, msg=name)
    for prefix in ("net.condition.", "net.denoise."):
        diff_norm = sum(float((on.generator_grads[k] - off.generator_grads[k]).norm()) ** 2
                        for k in expected if k.startswith(prefix)) ** 0.5
        assert diff_norm > 1e-5, f"the IPR loss adds nothing to {prefix[4:-1]}'s gradient ({diff_norm:.3g})"
