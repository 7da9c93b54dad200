"""Tests of the latent autoencoder's losses against hand computations (NumPy, float64) and of their wiring:
both reconstructions decode with the degraded image's hidden features."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from irsde import latent_losses
from irsde.latent_losses import autoencoder_losses, latent_statistics_loss
from irsde.nets.latent_autoencoder import LatentUNet


def _pair(seed: int = 0, shape: tuple[int, ...] = (2, 3, 32, 24)) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    lq = torch.rand(shape, generator=gen)
    return lq, (lq + 0.3 * torch.rand(shape, generator=gen)).clamp(0, 1)


def test_official_weights() -> None:
    # unet-latent/models/latent_model.py: loss_rec + loss_rep + loss_reg * 0.001; std target 0.5 * std(LQ).
    assert (latent_losses.REC_WEIGHT, latent_losses.REP_WEIGHT, latent_losses.REG_WEIGHT) == (1.0, 1.0, 1e-3)
    assert latent_losses.STD_RATIO == 0.5


def test_statistics_loss_by_hand() -> None:
    gen = torch.Generator().manual_seed(1)
    latent = 2.0 * torch.randn(2, 8, 4, 3, generator=gen) + 0.7
    image = torch.rand(2, 3, 32, 24, generator=gen)
    lat, img = latent.double().numpy(), image.double().numpy()
    # Mean and standard deviation over the whole batch tensor; the standard deviation with Bessel's correction.
    expected = abs(lat.mean() - img.mean()) + abs(lat.std(ddof=1) - 0.5 * img.std(ddof=1))
    assert abs(latent_statistics_loss(latent, image).item() - expected) < 1e-5


class RecordingAE(torch.nn.Module):
    """A tiny affine stand-in for the autoencoder that records which hidden features every decode gets."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = torch.nn.Parameter(torch.tensor(1.5))
        self.decoded_with: list[torch.Tensor] = []

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        latent = self.scale * F.avg_pool2d(x, 8).repeat(1, 3, 1, 1)[:, :8] - 0.2
        return latent, 0.5 * x + 0.1

    def decode(self, latent: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
        self.decoded_with.append(hidden)
        return 0.3 * F.interpolate(latent[:, :3], scale_factor=8, mode="nearest") + hidden


def test_losses_by_hand() -> None:
    lq, gt = _pair()
    net = RecordingAE()
    got = autoencoder_losses(net, lq, gt)

    def encode(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        n, c, h, w = x.shape
        pooled = x.reshape(n, c, h // 8, 8, w // 8, 8).mean(axis=(3, 5))
        return 1.5 * np.concatenate([pooled] * 3, axis=1)[:, :8] - 0.2, 0.5 * x + 0.1

    def decode(latent: np.ndarray, hidden: np.ndarray) -> np.ndarray:
        return 0.3 * latent[:, :3].repeat(8, axis=2).repeat(8, axis=3) + hidden

    x_lq, x_gt = lq.double().numpy(), gt.double().numpy()
    l_lq, h_lq = encode(x_lq)
    l_gt, _ = encode(x_gt)
    rec = np.abs(decode(l_lq, h_lq) - x_lq).mean()
    rep = np.abs(decode(l_gt, h_lq) - x_gt).mean()
    reg = abs(l_lq.mean() - x_lq.mean()) + abs(l_lq.std(ddof=1) - 0.5 * x_lq.std(ddof=1))
    for key, value in {"rec": rec, "rep": rep, "reg": reg, "loss": rec + rep + 1e-3 * reg}.items():
        assert abs(got[key].item() - value) < 1e-5, key
    # Both decodes received the LQ image's hidden features (the very tensor its encode returned).
    h_lq_torch = net.encode(lq)[1]
    assert len(net.decoded_with) == 2
    for hidden in net.decoded_with:
        torch.testing.assert_close(hidden, h_lq_torch, atol=0, rtol=0)


def test_real_autoencoder_wiring_uses_lq_hidden_features() -> None:
    torch.manual_seed(0)
    net = LatentUNet(ch=4, ch_mult=(2, 2, 4, 4), embed_dim=8)
    lq, gt = _pair(seed=2, shape=(2, 3, 32, 32))
    got = autoencoder_losses(net, lq, gt)
    with torch.no_grad():
        l_lq, h_lq = net.encode(lq)
        l_gt, h_gt = net.encode(gt)
        rep_lq_hidden = F.l1_loss(net.decode(l_gt, h_lq), gt)
        rep_gt_hidden = F.l1_loss(net.decode(l_gt, h_gt), gt)
        rec = F.l1_loss(net.decode(l_lq, h_lq), lq)
    torch.testing.assert_close(got["rep"].detach(), rep_lq_hidden)
    torch.testing.assert_close(got["rec"].detach(), rec)
    assert abs(rep_lq_hidden - rep_gt_hidden) > 1e-4  # the check above would notice H_gt instead of H_lq

    # The encoder learns from both images: the GT path through rep, the LQ path through rec and reg.
    got["loss"].backward()
    missing = [name for name, p in net.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, missing
