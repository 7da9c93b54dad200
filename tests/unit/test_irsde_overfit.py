"""A tiny IR-SDE network overfits a few fixed pairs: the matching loss falls far below its starting value."""

import torch

from irsde.losses import matching_loss
from irsde.nets.unet import ConditionalUNet
from irsde.sde import IRSDE


def test_tiny_model_overfits_two_pairs():
    torch.manual_seed(0)
    sde = IRSDE(max_sigma=10, T=20)
    net = ConditionalUNet(nf=8, depth=2)
    gt = torch.rand(2, 3, 8, 8)
    lq = (gt + 0.3 * (torch.rand(2, 1, 8, 8) > 0.8)).clamp(0, 1)  # sparse bright "rain"
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    eval_gen = torch.Generator().manual_seed(123)
    t_fixed = torch.randint(1, sde.T + 1, (64,), generator=eval_gen)

    def held_loss() -> float:
        with torch.no_grad():
            g = torch.Generator().manual_seed(7)
            return float(matching_loss(sde, net, gt.repeat(32, 1, 1, 1), lq.repeat(32, 1, 1, 1), generator=g,
                                       t=t_fixed))

    start = held_loss()
    for _ in range(600):
        loss = matching_loss(sde, net, gt.repeat(4, 1, 1, 1), lq.repeat(4, 1, 1, 1))
        opt.zero_grad()
        loss.backward()
        opt.step()
    end = held_loss()
    # measured: 0.018 -> 0.0061 (0.34x) at 600 steps on one Xeon, 0.0056 at 400 on another (the trajectory
    # differs between CPUs by rounding); 800 steps: 0.0049
    assert end < 0.45 * start, (start, end)
