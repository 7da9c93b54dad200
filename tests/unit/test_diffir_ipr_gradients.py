"""DiffIR stage 2: where the gradients of each loss term go.

Official DiffIRS2Model: the stage-2 IPR is produced by CPEN_S2 and the T-step denoiser chain, all in the autograd
graph, and l_abs = mean |IPR_S2 - IPR_S1.detach()| is back-propagated into CPEN_S2 and the denoiser (also in the
joint phase, next to the L1 reconstruction loss), while the frozen CPEN_S1 (teacher) only provides the target.

So, with only the IPR loss term (pixel-loss weight 0):
* CPEN_S2's and the denoiser's gradients are non-zero and equal d/dθ mean |IPR_S2(θ) - IPR_S1|, recomputed here
  with autograd on a copy of the network through its public forward_train;
* the DIRformer gets exactly zero (the IPR loss does not depend on it);
* the teacher gets no gradient at all.
With only the pixel term (IPR-loss weight 0) the reconstruction loss still reaches CPEN_S2 and the denoiser
through the IPR that modulates the DIRformer.
"""

from __future__ import annotations

import copy
import os
from functools import partial

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

from diffir.networks import DiffIRS2  # noqa: E402
from diffir.stage2 import DiffIRStage2Module  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

from tests.unit.test_diffir_module import TINY, _jitter  # noqa: E402

STUDENT = ("condition.", "denoise.")


def _module(encoder_iter: int, pixel_weight: float, ipr_weight: float) -> DiffIRStage2Module:
    torch.manual_seed(0)
    module = DiffIRStage2Module(_jitter(DiffIRS2(**TINY), 2), encoder_iter=encoder_iter,
                                optimizer=partial(torch.optim.Adam, lr=1e-3),
                                pixel_loss={"weight": pixel_weight}, kd={"weight": ipr_weight})
    _jitter(module.teacher, 1)  # a non-trivial stage-1 CPEN (frozen by the module)
    return module.train()


def _batch(n: int = 2, size: int = 16) -> dict:
    gen = torch.Generator().manual_seed(3)
    gt = torch.rand(n, 3, size, size, generator=gen)
    return {"lq": (gt + 0.1 * torch.randn(gt.shape, generator=gen)).clamp(0, 1), "gt": gt}


def _grads(net: torch.nn.Module, prefixes) -> dict[str, torch.Tensor | None]:
    return {k: p.grad for k, p in net.named_parameters() if k.startswith(prefixes)}


@pytest.mark.parametrize("encoder_iter", [0, 10], ids=["joint-phase", "encoder-phase"])
def test_ipr_loss_alone_trains_cpen_s2_and_the_denoiser_and_nothing_else(encoder_iter):
    module = _module(encoder_iter, pixel_weight=0.0, ipr_weight=1.0)
    batch = _batch()
    reference = copy.deepcopy(module.net)  # the same weights, for an independent gradient

    torch.manual_seed(11)  # the chain's q_sample noise comes from the global RNG
    loss, _ = module.training_loss(batch)
    loss.backward()

    # The teacher is frozen and outside the graph.
    assert all(not p.requires_grad and p.grad is None for p in module.teacher.parameters())
    # The DIRformer does not enter l_abs: zero (or no) gradient.
    for name, g in _grads(module.net, ("G.",)).items():
        assert g is None or not g.any(), name

    # d/dθ mean |IPR_S2(θ) - IPR_S1| on the copy, through its public training forward.
    with torch.no_grad():
        target = module.teacher(batch["lq"], batch["gt"])
    torch.manual_seed(11)
    _, ipr, _ = reference.forward_train(batch["lq"], target)
    assert ipr.requires_grad, "forward_train's IPR is not in the autograd graph (documented: it is)"
    expected_loss = (ipr - target).abs().mean()
    assert loss.item() == pytest.approx(expected_loss.item(), rel=1e-5)
    params = {k: p for k, p in reference.named_parameters() if k.startswith(STUDENT)}
    expected = dict(zip(params, torch.autograd.grad(expected_loss, list(params.values()))))

    got = _grads(module.net, STUDENT)
    assert set(got) == set(expected) and {k.split(".")[0] for k in got} == {"condition", "denoise"}
    for prefix in STUDENT:
        norm = sum(float(g.norm()) ** 2 for k, g in got.items() if k.startswith(prefix) and g is not None) ** 0.5
        assert norm > 1e-6, f"no IPR-loss gradient reaches {prefix[:-1]} (norm {norm:.3g})"
    for name, g in got.items():
        assert g is not None, f"{name}: no gradient"
        torch.testing.assert_close(g, expected[name], rtol=1e-4, atol=1e-7, msg=name)


def test_pixel_loss_alone_reaches_cpen_s2_and_the_denoiser_through_the_ipr():
    module = _module(encoder_iter=0, pixel_weight=1.0, ipr_weight=0.0)
    torch.manual_seed(12)
    loss, _ = module.training_loss(_batch())
    loss.backward()
    assert all(p.grad is None for p in module.teacher.parameters())
    for prefix in ("G.", *STUDENT):
        grads = [g for g in _grads(module.net, (prefix,)).values() if g is not None]
        assert grads and sum(float(g.norm()) for g in grads) > 1e-6, prefix
