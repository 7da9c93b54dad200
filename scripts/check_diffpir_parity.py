"""Check that diffpir.prior.GuidedUNet computes what guided-diffusion's UNetModel computes.

    python scripts/check_diffpir_parity.py --official-repo /path/to/guided-diffusion

The official package is imported from a local checkout of openai/guided-diffusion (or of DiffPIR, which ships
a copy under ``guided_diffusion/``) through sys.path; nothing is copied into this repository. For each
configuration both networks get the same random weights (every parameter, including the zero-initialised
output convolutions, so that every path contributes) by loading the official state dict into ours with
``strict=True``, which also proves that the parameter names are identical. The released priors' configurations
are built the way DiffPIR builds them, through the official ``create_model`` and its string flags, which also
checks our reading of ``attention_resolutions``. Prints the largest absolute output difference per
configuration and exits with status 1 when one exceeds the tolerance.
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import sys
import time
import types
from pathlib import Path

import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from core.nn import count_parameters  # noqa: E402
from diffpir.prior.unet import PRESETS, GuidedUNet, small_config  # noqa: E402

TOLERANCE = 1e-5

# DiffPIR's model flags per released prior (utils_model.create_argparser + main_ddpir_*.py's model_config).
OFFICIAL_FLAGS = {
    "ffhq_10m": {"num_channels": 128, "num_res_blocks": 1, "attention_resolutions": "16", "dropout": 0.1},
    "imagenet_256_uncond": {"num_channels": 256, "num_res_blocks": 2, "attention_resolutions": "8,16,32",
                            "dropout": 0.1},
}
COMMON_FLAGS = {
    "image_size": 256, "channel_mult": "", "learn_sigma": True, "class_cond": False, "use_checkpoint": False,
    "num_heads": 4, "num_head_channels": 64, "num_heads_upsample": -1, "use_scale_shift_norm": True,
    "resblock_updown": True, "use_fp16": False, "use_new_attention_order": False,
}
# A second small network exercising the branches the released priors do not use.
VARIANT = small_config(num_res_blocks=2, attention_resolutions=(2, 4), use_scale_shift_norm=False,
                       resblock_updown=False, use_new_attention_order=True, num_head_channels=-1,
                       num_heads=2, num_heads_upsample=4, out_channels=3)


def import_official(repo: Path) -> types.SimpleNamespace:
    """guided_diffusion.unet and .script_util from the checkout at ``repo``.

    Modules of the package that the network does not need import blobfile and mpi4py at module level; when
    they are not installed, empty stand-ins are registered so that nothing has to be installed.
    """
    if not (repo / "guided_diffusion" / "unet.py").is_file():
        raise SystemExit(f"{repo} has no guided_diffusion/unet.py: pass an openai/guided-diffusion checkout")
    for package, modules in (("blobfile", ["blobfile"]), ("mpi4py", ["mpi4py", "mpi4py.MPI"])):
        if package not in sys.modules and importlib.util.find_spec(package) is None:
            for name in modules:
                sys.modules[name] = types.ModuleType(name)
    sys.path.insert(0, str(repo))
    from guided_diffusion import script_util, unet

    return types.SimpleNamespace(unet=unet, script_util=script_util)


def official_kwargs(config: dict) -> dict:
    """UNetModel keyword arguments of one of our configs (the two share their meaning)."""
    kwargs = dict(config)
    kwargs.pop("learn_sigma", None)
    return kwargs


def randomize_(model: torch.nn.Module, seed: int) -> None:
    """Give every parameter a random value of a sensible scale, so that zero-initialised paths are used."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim > 1:
                fan_in = math.prod(p.shape[1:])
                p.copy_(torch.randn(p.shape, generator=gen) / math.sqrt(fan_in))
            elif name.endswith("weight"):  # GroupNorm gains
                p.copy_(1 + 0.1 * torch.randn(p.shape, generator=gen))
            else:
                p.copy_(0.1 * torch.randn(p.shape, generator=gen))


def compare(name: str, official: torch.nn.Module, ours: GuidedUNet, size: int, seed: int) -> float:
    randomize_(official, seed)
    ours.load_state_dict(official.state_dict(), strict=True)
    official.eval()
    ours.eval()
    n_params = count_parameters(ours)
    gen = torch.Generator().manual_seed(seed + 1)
    x = torch.randn(2, ours.in_channels, size, size, generator=gen)
    t = torch.tensor([10, 500])
    start = time.perf_counter()
    with torch.no_grad():
        expected = official(x, t)
        got = ours(x, t)
    diff = (expected - got).abs().max().item()
    print(
        f"{name:22s} params {n_params:>11,d}  input {tuple(x.shape)} t={t.tolist()}  "
        f"max|out| {expected.abs().max().item():.3f}  max abs diff {diff:.3e}  "
        f"({time.perf_counter() - start:.1f} s)",
        flush=True,
    )
    return diff


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--official-repo", type=Path, required=True,
                        help="checkout of openai/guided-diffusion")
    parser.add_argument("--size", type=int, default=64, help="input size for the released configurations")
    parser.add_argument("--skip-imagenet", action="store_true",
                        help="skip the 552 M-parameter ImageNet model")
    args = parser.parse_args(argv)

    torch.set_grad_enabled(False)
    gd = import_official(args.official_repo.resolve())
    worst = 0.0

    small = small_config()
    worst = max(worst, compare("small", gd.unet.UNetModel(**official_kwargs(small)),
                               GuidedUNet(**small), 32, 0))
    worst = max(worst, compare("small_variant", gd.unet.UNetModel(**official_kwargs(VARIANT)),
                               GuidedUNet(**VARIANT), 32, 1))
    for seed, preset in enumerate(PRESETS, start=2):
        if preset == "imagenet_256_uncond" and args.skip_imagenet:
            continue
        official = gd.script_util.create_model(**COMMON_FLAGS, **OFFICIAL_FLAGS[preset])
        worst = max(worst, compare(preset, official, GuidedUNet(**PRESETS[preset]), args.size, seed))
        del official

    verdict = "OK" if worst <= TOLERANCE else "FAIL"
    print(f"{verdict}: largest max abs diff {worst:.3e} (tolerance {TOLERANCE:.0e})")
    return 0 if worst <= TOLERANCE else 1


if __name__ == "__main__":
    sys.exit(main())
