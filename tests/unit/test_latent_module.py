"""Latent Refusion's recipes and restorers against independent computations: the IR-SDE sees latents, the
autoencoder is frozen and out of the optimizer, restorers = decode(sampler(encode)), Lion = Google's update, the
swap augmentation, NTIRE layouts and autoencoder weight loading."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from core.cli import CONFIG_DIR
from core.errors import CheckpointError, ConfigError, DataError
from irsde import samplers
from irsde.latent_module import LatentAutoencoderModule, LatentIRSDEModule, load_autoencoder_weights
from irsde.latent_restorer import AutoencoderRestorer
from irsde.losses import LOSSES
from irsde.nets.latent_autoencoder import LatentUNet
from irsde.nets.nafnet import ConditionalNAFNet

SDE = {"max_sigma": 50, "T": 10, "schedule": "cosine", "eps": 0.005}


def _ae() -> LatentUNet:
    torch.manual_seed(0)
    return LatentUNet(ch=4, ch_mult=(2, 4), embed_dim=4)


def _module(tmp_path, **kwargs) -> LatentIRSDEModule:
    path = tmp_path / "ae.pth"
    torch.save(_ae().state_dict(), path)  # an official-style plain state dict
    net = ConditionalNAFNet(img_channel=4, width=8, enc_blk_nums=[1, 1], dec_blk_nums=[1, 1], intro_skip=True)
    optimizer = functools.partial(torch.optim.Adam, lr=1e-3)
    return LatentIRSDEModule(net=net, sde=SDE, autoencoder=LatentUNet(ch=4, ch_mult=(2, 4), embed_dim=4),
                             autoencoder_ckpt=str(path), optimizer=optimizer, ema={"decay": None}, **kwargs)


def _batch() -> dict:
    g = torch.Generator().manual_seed(1)
    return {"lq": torch.rand(2, 3, 16, 16, generator=g), "gt": torch.rand(2, 3, 16, 16, generator=g)}


def test_the_sde_sees_latents_of_lq_and_gt(tmp_path):
    module = _module(tmp_path)
    seen = []
    forward = module.net.forward
    module.net.forward = lambda x, mu, t: seen.append((x.shape, mu.clone())) or forward(x, mu, t)
    batch = _batch()
    torch.manual_seed(5)
    loss, _ = module.training_loss(batch)
    ae = _ae()  # the same weights, loaded independently
    with torch.no_grad():
        mu, x0 = ae.encode(batch["lq"])[0], ae.encode(batch["gt"])[0]
    assert seen[0][0] == (2, 4, 8, 8)  # embed_dim channels at 1/2 scale (two levels)
    torch.testing.assert_close(seen[0][1], mu, rtol=0, atol=0)
    module.net.forward = forward
    torch.manual_seed(5)
    expected = LOSSES["matching"](module.sde, module.net, x0, mu)
    torch.testing.assert_close(loss, expected, rtol=0, atol=0)


def test_the_autoencoder_is_frozen_and_out_of_the_optimizer(tmp_path):
    module = _module(tmp_path).train()
    assert not module.autoencoder.training and module.net.training
    assert not any(p.requires_grad for p in module.autoencoder.parameters())
    optimizer = module.configure_optimizers()
    in_optimizer = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert in_optimizer == {id(p) for p in module.net.parameters()}
    module.training_loss(_batch())[0].backward()
    assert all(p.grad is None for p in module.autoencoder.parameters())
    assert bool(module.autoencoder_loaded)


@pytest.mark.parametrize("sampler", ["posterior", "sde", "ode", "mr_ode", "mr_sde"])
def test_restorer_decodes_the_sampled_latent_with_the_lq_features(tmp_path, sampler):
    module = _module(tmp_path).eval()
    lq = _batch()["lq"][:1, :, :13, :15]  # an odd size: padded and cropped back
    out = module.restorer(sampler=sampler, steps=3).restore(lq, generator=torch.Generator().manual_seed(3))
    ae = _ae()
    with torch.no_grad():
        mu, hidden = ae.encode(lq)
        latent = samplers.restore(sampler, module.sde, module.net, mu, steps=3,
                                  generator=torch.Generator().manual_seed(3))
        expected = ae.decode(latent, hidden).clamp(0, 1)
    assert out.shape == lq.shape
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-6)


def test_a_latent_module_without_its_autoencoder_refuses_to_restore(tmp_path):
    module = _module(tmp_path)
    module.autoencoder_loaded.fill_(False)
    with pytest.raises(ConfigError, match="autoencoder_ckpt"):
        module.restorer()


def test_autoencoder_recipe_and_restorer(tmp_path):
    net = _ae()
    module = LatentAutoencoderModule(net=net, optimizer=functools.partial(torch.optim.Adam, lr=1e-3),
                                     ema={"decay": None})
    batch = _batch()
    loss, extras = module.training_loss(batch)
    with torch.no_grad():
        latent_lq, hidden_lq = net.encode(batch["lq"])
        latent_gt, _ = net.encode(batch["gt"])
        rec = (net.decode(latent_lq, hidden_lq) - batch["lq"]).abs().mean()
        rep = (net.decode(latent_gt, hidden_lq) - batch["gt"]).abs().mean()
        reg = (latent_lq.mean() - batch["lq"].mean()).abs() + (latent_lq.std() - 0.5 * batch["lq"].std()).abs()
        torch.testing.assert_close(loss.detach(), rec + rep + 1e-3 * reg)
        out = module.restorer().restore(batch["lq"], gt=batch["gt"])
        torch.testing.assert_close(out, net.decode(latent_gt, hidden_lq).clamp(0, 1), rtol=0, atol=0)
    assert set(extras) == {"rec", "rep", "reg"}
    with pytest.raises(ConfigError, match="ground truth"):
        AutoencoderRestorer(net).restore(batch["lq"])
    with pytest.raises(ConfigError, match="overlap"):
        module.restorer(tile=16, overlap=3)


def test_autoencoder_weights_from_any_file(tmp_path):
    source = _ae()
    torch.save({"state_dict": {f"net.{k}": v for k, v in source.state_dict().items()}}, tmp_path / "suite.ckpt")
    torch.save({f"module.{k}": v for k, v in source.state_dict().items()}, tmp_path / "official.pth")
    torch.save({"state_dict": {f"autoencoder.{k}": v for k, v in source.state_dict().items()}}, tmp_path / "l.ckpt")
    for name in ("suite.ckpt", "official.pth", "l.ckpt"):
        target = LatentUNet(ch=4, ch_mult=(2, 4), embed_dim=4)
        load_autoencoder_weights(target, tmp_path / name)
        for key, value in source.state_dict().items():
            assert torch.equal(target.state_dict()[key], value), (name, key)
    with pytest.raises(CheckpointError, match="model.autoencoder"):
        load_autoencoder_weights(LatentUNet(ch=8, ch_mult=(2, 4), embed_dim=4), tmp_path / "official.pth")
    torch.save({"intro.weight": torch.zeros(1)}, tmp_path / "nafnet.pth")
    with pytest.raises(CheckpointError, match="IR-SDE network"):
        load_autoencoder_weights(LatentUNet(ch=4, ch_mult=(2, 4), embed_dim=4), tmp_path / "nafnet.pth")


def test_lion_from_the_config_is_googles_lion():
    cfg = OmegaConf.load(CONFIG_DIR / "model" / "refusion_latent.yaml").optimizer
    assert (cfg.lr, list(cfg.betas), cfg.weight_decay) == (3e-5, [0.9, 0.99], 0.0)
    p = torch.nn.Parameter(torch.tensor([1.0, -2.0, 3.0]))
    optimizer = instantiate(cfg)([p])
    grads = [torch.tensor([0.5, -1.0, 0.0]), torch.tensor([-3.0, 0.2, 1.0])]
    w, m = p.detach().clone(), torch.zeros(3)
    for g in grads:  # Chen et al. 2023, Algorithm 2 (weight decay 0)
        p.grad = g.clone()
        optimizer.step()
        w = w - 3e-5 * torch.sign(0.9 * m + 0.1 * g)
        m = 0.99 * m + 0.01 * g
    torch.testing.assert_close(p.detach(), w, rtol=0, atol=0)
    assert isinstance(optimizer.param_groups[0]["betas"], list | tuple)
    assert type(optimizer.param_groups[0]["betas"]).__module__ == "builtins"  # weights-only checkpoints


def test_swap_is_seeded_per_sample_and_about_half():
    from data.swap import SwapPairs, swap_drawn

    class Items(torch.utils.data.Dataset):
        def __len__(self):
            return 4

        def __getitem__(self, key):
            return {"lq": torch.zeros(1), "gt": torch.ones(1), "index": key[0]}

    data = SwapPairs(Items(), 0.5)
    draws = [data[(0, seed)]["lq"].item() == 1 for seed in range(2000)]
    assert 0.45 < np.mean(draws) < 0.55
    assert draws == [swap_drawn(seed, 0.5) for seed in range(2000)]
    assert draws == [data[(3, seed)]["lq"].item() == 1 for seed in range(2000)]  # the seed alone decides
    assert all(data[(0, s)]["gt"].item() == 1 - data[(0, s)]["lq"].item() for s in range(20))
    assert not any(SwapPairs(Items(), 0.0)[(0, s)]["lq"].item() for s in range(50))
    with pytest.raises(DataError, match="data.swap"):
        SwapPairs(Items(), 1.5)


def _write(path, value=0):
    from core.io import write_image

    write_image(path, np.full((8, 8, 3), value, dtype=np.uint8))


def test_ntire_layouts(tmp_path):
    from data.layouts import ntire_pairs

    for split, lq, gt in (("train", "hazy", "GT"), ("val", "LQ", "GT")):
        for i in (1, 2):
            _write(tmp_path / "dehaze" / split / lq / f"{i:02d}.png")
            _write(tmp_path / "dehaze" / split / gt / f"{i:02d}.png")
    pairs = ntire_pairs(tmp_path / "dehaze", "train", "dehaze")
    assert [(p.lq.parent.name, p.gt.parent.name, p.name) for p in pairs] == [("hazy", "GT", "01"), ("hazy", "GT", "02")]
    assert [p.lq.parent.name for p in ntire_pairs(tmp_path / "dehaze", "test", "dehaze")] == ["LQ", "LQ"]
    for i in (1, 2):  # NH-HAZE style: one folder of tagged files
        _write(tmp_path / "nh" / f"{i:02d}_hazy.png")
        _write(tmp_path / "nh" / f"{i:02d}_GT.png")
    pairs = ntire_pairs(tmp_path / "nh", "test", "dehaze")
    assert [(p.lq.name, p.gt.name, p.name) for p in pairs] == [("01_hazy.png", "01_GT.png", "01"),
                                                               ("02_hazy.png", "02_GT.png", "02")]
    for sub in ("input", "gt"):
        _write(tmp_path / "shadow" / "train" / sub / "0001.png")
    assert ntire_pairs(tmp_path / "shadow", "train", "shadow")[0].lq.parent.name == "input"
    _write(tmp_path / "nh" / "03_hazy.png")
    with pytest.raises(DataError, match="do not pair up"):
        ntire_pairs(tmp_path / "nh", "test", "dehaze")
    with pytest.raises(DataError, match="No NTIRE 2023 shadow layout"):
        ntire_pairs(tmp_path / "dehaze", "train", "shadow")
