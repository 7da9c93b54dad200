"""The DDPM prior's training recipe: the ε-prediction loss against a direct computation from the schedule."""

from __future__ import annotations

import pytest
import torch

from diffpir.prior.module import DDPMPriorModule
from diffpir.prior.unet import GuidedUNet, small_config


class Recorder(torch.nn.Module):
    """Returns a fixed affine function of its input (2C channels: ε and 'variances') and records its calls."""

    def __init__(self, out_channels: int = 6) -> None:
        super().__init__()
        self.scale = torch.nn.Parameter(torch.tensor(0.3))
        self.out_channels = out_channels
        self.calls: list[tuple[torch.Tensor, torch.Tensor]] = []

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        self.calls.append((x.detach().clone(), t.clone()))
        reps = self.out_channels // x.shape[1]
        return (self.scale * x).repeat(1, reps, 1, 1)


def _module(net: torch.nn.Module, **kwargs) -> DDPMPriorModule:
    return DDPMPriorModule(net, optimizer=None, ema={"decay": 0.0}, **kwargs)


def test_loss_is_the_noise_prediction_error_on_the_linear_schedule():
    net = Recorder()
    module = _module(net)
    gt = torch.rand(4, 3, 8, 8)
    torch.manual_seed(5)
    loss, _ = module.training_loss({"gt": gt})
    torch.manual_seed(5)  # the same draws, recomputed by hand from the betas
    t = torch.randint(0, 1000, (4,))
    noise = torch.randn(4, 3, 8, 8)
    betas = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)
    abar = torch.cumprod(1 - betas, 0)[t].float().view(-1, 1, 1, 1)
    x_t = abar.sqrt() * (gt * 2 - 1) + (1 - abar).sqrt() * noise
    x_seen, t_seen = net.calls[0]
    assert torch.equal(t_seen, t)
    assert torch.allclose(x_seen, x_t, atol=1e-6)
    assert float(loss.detach()) == pytest.approx(float(((0.3 * x_t - noise) ** 2).mean()), rel=1e-5)


def test_only_the_epsilon_half_of_a_learned_variance_output_is_trained():
    torch.manual_seed(0)
    net = GuidedUNet(**small_config(image_size=16, channel_mult=(1, 2), num_head_channels=32))
    torch.nn.init.normal_(net.out[-1].weight, std=0.01)  # the zero-initialised output layer would hide it
    module = _module(net)
    loss, _ = module.training_loss({"gt": torch.rand(2, 3, 16, 16)})
    loss.backward()
    grad = net.out[-1].weight.grad
    assert grad[:3].abs().sum() > 0 and torch.all(grad[3:] == 0)


def test_schedule_settings_reach_the_training_noise():
    module = _module(Recorder(3), schedule={"T": 10, "beta_start": 0.1, "beta_end": 0.2})
    expected = torch.cumprod(1 - torch.linspace(0.1, 0.2, 10, dtype=torch.float64), 0).sqrt().float()
    assert torch.allclose(module.sqrt_ab, expected)
    module.training_loss({"gt": torch.rand(64, 3, 4, 4)})
    assert int(module.net.calls[0][1].max()) < 10
