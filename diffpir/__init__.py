"""DiffPIR: plug-and-play image restoration with a diffusion prior (Zhu et al., CVPRW 2023).

`diffpir.load_prior(path)` returns the prior network `net(x_t, t)` from a guided-diffusion checkpoint
(ffhq_10m.pt, 256x256_diffusion_uncond.pt) or a suite checkpoint, configuration inferred from the weights.
"""


def load_prior(path, preset=None, map_location="cpu", **kwargs):
    from diffpir.official import load_prior as _load

    return _load(path, preset=preset, map_location=map_location, **kwargs)
