"""DiffIR: an efficient diffusion model for image restoration (Xia et al., ICCV 2023).

`diffir.load_network(path)` returns the ready stage-1 or stage-2 network from a suite checkpoint or an official
release file (EMA weights preferred, configuration inferred from the weights): in eval mode stage 1 is called
as `net(lq, gt)` and stage 2 as `net(lq)`, each returning the restored image.
"""


def load_network(path, map_location="cpu", **kwargs):
    from diffir.official import load_network as _load

    return _load(path, map_location=map_location, **kwargs)
