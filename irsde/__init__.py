"""IR-SDE: mean-reverting SDE image restoration (Luo et al., ICML 2023).

`irsde.load_network(path)` returns the ready noise network `net(x_t, mu, t)` from a suite checkpoint (EMA
weights preferred) or an official release file, its configuration inferred from the weights' shapes.
"""


def load_network(path, map_location="cpu"):
    from irsde.official import load_network as _load

    return _load(path, map_location=map_location)
