"""The non-official x0 / residual parameterizations of IR-SDE (irsde/parameterization.py).

An oracle network that knows x0 must become the noise that made x_t, for both SDEs; the reverse-step mean the
maximum-likelihood loss compares must depend on x0_hat with the closed-form weight 2 lam^2 theta_t dt e^{-u_t} /
sigma_bar_t^2 (at most 1: the conditioning argument for the option); and a module trained this way restores.
"""

import pytest
import torch

from irsde.module import IRSDEModule
from irsde.nets.unet import ConditionalUNet
from irsde.parameterization import as_noise_model
from irsde.samplers import reverse_posterior
from irsde.sde import IRSDE, DenoisingIRSDE


def _oracle(x0: torch.Tensor, prediction: str):
    def net(x_t, condition, t):
        return x0 - condition if prediction == "residual" else x0.clone()

    return net


@pytest.mark.parametrize("prediction", ["x0", "residual"])
@pytest.mark.parametrize("sde", [IRSDE(max_sigma=10, T=100), DenoisingIRSDE(max_sigma=50, T=100)],
                         ids=["irsde", "denoising"])
def test_oracle_prediction_gives_the_noise_that_made_x_t(sde, prediction):
    gen = torch.Generator().manual_seed(0)
    x0 = torch.rand(6, 3, 8, 8, generator=gen)
    mu = (x0 + 0.3 * torch.rand(6, 3, 8, 8, generator=gen)).clamp(0, 1)
    t, x_t, noise = sde.sample_training_state(x0, mu, gen, return_noise=True)
    model = as_noise_model(_oracle(x0, prediction), sde, prediction)
    got = model(x_t, sde.model_condition(x_t, mu), t)
    torch.testing.assert_close(got, noise, atol=2e-3, rtol=0)  # float32 over sigma_bar as small as 0.005


def test_oracle_x0_network_restores_x0_with_the_posterior_sampler():
    sde = IRSDE(max_sigma=10, T=100)
    gen = torch.Generator().manual_seed(1)
    x0 = torch.rand(2, 3, 8, 8, generator=gen)
    mu = (x0 + 0.3).clamp(0, 1)
    out = reverse_posterior(sde, as_noise_model(_oracle(x0, "x0"), sde, "x0"), mu, steps=10, generator=gen)
    torch.testing.assert_close(out, x0, atol=1e-4, rtol=0)


def test_reverse_step_mean_weights_x0_hat_by_the_closed_form():
    sde = IRSDE(max_sigma=10, T=100)
    lam2 = sde.max_sigma**2
    gen = torch.Generator().manual_seed(2)
    mu = torch.rand(1, 1, 2, 2, generator=gen)
    for t in (1, 2, 10, 50, 100):
        x_t = mu + sde.max_sigma * torch.randn(1, 1, 2, 2, generator=gen)
        x0_hat = torch.rand(1, 1, 2, 2, generator=gen, requires_grad=True)
        tt = torch.tensor([t])
        noise = as_noise_model(lambda x, c, s, out=x0_hat: out, sde, "x0")(x_t, mu, tt)
        mean = sde.reverse_sde_step_mean(x_t, mu, sde.score_from_noise(noise, tt), tt)
        (grad,) = torch.autograd.grad(mean.sum(), x0_hat)
        theta_dt, u_t = float(sde.step_elapsed[t]), float(sde.elapsed[t])
        expected = 2 * lam2 * theta_dt * torch.exp(torch.tensor(-u_t)) / float(sde.sigma_bars[t]) ** 2
        torch.testing.assert_close(grad, torch.full_like(grad, float(expected)), rtol=1e-4, atol=0)
        assert float(expected) <= 1.0 + 1e-4, (t, float(expected))


def test_unknown_prediction_is_refused_with_the_valid_names():
    with pytest.raises(ValueError, match="x0, residual"):
        IRSDEModule(net=ConditionalUNet(nf=4, depth=1), sde={"max_sigma": 10, "T": 10}, prediction="score")


def test_residual_prediction_trains_and_restores_better_than_its_input():
    """A tiny residual-prediction model fits two pairs with the matching loss and its posterior restores them."""
    torch.manual_seed(0)
    module = IRSDEModule(net=ConditionalUNet(nf=8, depth=2), sde={"max_sigma": 10, "T": 20}, prediction="residual")
    gt = torch.rand(2, 3, 8, 8)
    lq = (gt + 0.3 * (torch.rand(2, 1, 8, 8) > 0.8)).clamp(0, 1)
    opt = torch.optim.Adam(module.net.parameters(), lr=3e-3)
    for _ in range(300):
        loss, _ = module.training_loss({"gt": gt.repeat(4, 1, 1, 1), "lq": lq.repeat(4, 1, 1, 1)})
        opt.zero_grad()
        loss.backward()
        opt.step()
    restorer = module.restorer(net=module.net, sampler="posterior")
    assert "residual prediction" in restorer.describe()
    out = restorer.restore(lq, generator=torch.Generator().manual_seed(3))
    err_in, err_out = float((lq - gt).pow(2).mean()), float((out - gt).pow(2).mean())
    assert err_out < 0.25 * err_in, (err_in, err_out)
