"""The shared recipe pieces: EMA update and decay schedule, posterior clipping option."""

import torch
from torch import nn

from core.ema import ema_update, make_ema_copy
from irsde import samplers
from irsde.sde import IRSDE


def test_ema_update_matches_hand_computation():
    net = nn.Linear(3, 2)
    ema = make_ema_copy(net)
    before = ema.weight.detach().clone()
    with torch.no_grad():
        net.weight.add_(1.0)
    ema_update(ema, net, decay=0.9)
    torch.testing.assert_close(ema.weight, 0.9 * before + 0.1 * net.weight.detach())
    assert not ema.weight.requires_grad


def test_posterior_clip_x0_bounds_a_bad_model_and_keeps_the_exact_one():
    torch.manual_seed(0)
    sde = IRSDE(max_sigma=10, T=20)
    x0 = torch.rand(1, 3, 8, 8)
    mu = (x0 + 0.2 * torch.randn_like(x0)).clamp(0, 1)

    def exact(x_t, m, t):
        return sde.noise_from_x0(x_t, x0, m, t)

    def wrong(x_t, m, t):
        return torch.full_like(x_t, 3.0)

    g = torch.Generator().manual_seed(1)
    plain = samplers.reverse_posterior(sde, exact, mu, generator=g)
    g = torch.Generator().manual_seed(1)
    clipped = samplers.reverse_posterior(sde, exact, mu, generator=g, clip_x0=(0.0, 1.0))
    torch.testing.assert_close(clipped, plain, atol=1e-5, rtol=0)
    g = torch.Generator().manual_seed(1)
    bad = samplers.reverse_posterior(sde, wrong, mu, generator=g)
    g = torch.Generator().manual_seed(1)
    bad_clipped = samplers.reverse_posterior(sde, wrong, mu, generator=g, clip_x0=(0.0, 1.0))
    assert bad.abs().max() > 2.0
    assert bad_clipped.min() >= -0.2 and bad_clipped.max() <= 1.2
