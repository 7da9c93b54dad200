"""Check that our IR-SDE networks reproduce the official ones, output for output.

    python scripts/check_irsde_parity.py --official-repo PATH [--ckpt FILE] [--tol 1e-5]

PATH is a local checkout of Algolzw/image-restoration-sde (it needs ``einops`` installed). The official
``ConditionalUNet`` and ``ConditionalNAFNet`` are imported from it at run time; nothing of it is copied here.
Without ``--ckpt``, each official network is built with random weights (zero- and one-initialised tensors
are perturbed too, so that every branch matters), its state dict is saved to a temporary file and loaded back
through ``irsde.official.load_network``; with ``--ckpt``, both sides load that file (the official network gets
its tensors with ``module.`` prefixes stripped, as the official loader does). Both networks then run on
the same random inputs (an even and an odd size, several times) and the largest absolute difference is
printed. Exit status 1 when any difference exceeds the tolerance.
"""

from __future__ import annotations

import argparse
import importlib.util
import inspect
import sys
import tempfile
from pathlib import Path
from types import ModuleType

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the suite's root, when run as a script

from core.nn import count_parameters  # noqa: E402
from irsde.official import (  # noqa: E402
    infer_nafnet_config,
    infer_unet_config,
    load_network,
    load_state_dict_any,
)

SIZES = ((1, 64, 64), (2, 70, 54))  # (batch, height, width): a multiple of 16 and an odd, unaligned size
TIMES = (1, 37, 100)


def import_official_modules(repo: Path, task: str) -> ModuleType:
    """The official ``models.modules`` package of ``codes/config/<task>``, under a name that cannot clash."""
    folder = repo / "codes" / "config" / task / "models" / "modules"
    init = folder / "__init__.py"
    if not init.is_file():
        raise SystemExit(f"{init} not found: pass the root of a checkout of Algolzw/image-restoration-sde")
    name = f"official_irsde_{task.replace('-', '_')}_modules"
    spec = importlib.util.spec_from_file_location(name, init, submodule_search_locations=[str(folder)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@torch.no_grad()
def randomise(net: nn.Module, generator: torch.Generator) -> None:
    """Perturb constant-initialised tensors (NAFNet's zero beta/gamma gates, unit norm gains) so that every
    branch matters; the other weights keep PyTorch's default random initialisation, whose scale keeps the
    activations of these deep networks finite."""
    for param in net.parameters():
        if torch.all(param == param.flatten()[0]):
            param.add_(0.1 * torch.randn(param.shape, generator=generator))


def unet_layout(official: ModuleType, cfg: dict) -> dict:
    """The official constructor's layout kwargs: ``depth`` (main code) or ``ch_mult`` (latent-dehazing)."""
    takes_ch_mult = "ch_mult" in inspect.signature(official.ConditionalUNet).parameters
    if takes_ch_mult:
        return {"ch_mult": list(cfg["ch_mult"])}
    if list(cfg["ch_mult"]) != [2 ** (i + 1) for i in range(cfg["depth"])]:
        raise SystemExit("these weights have a custom ch_mult: compare them with --task latent-dehazing")
    return {"depth": cfg["depth"]}


@torch.no_grad()
def max_difference(official: nn.Module, ours: nn.Module, channels: int, generator: torch.Generator) -> float:
    worst = 0.0
    for batch, height, width in SIZES:
        x_t = torch.rand(batch, channels, height, width, generator=generator)
        mu = torch.rand(batch, channels, height, width, generator=generator)
        for t in TIMES:
            # Both an int time (official: a (1,) tensor) and a per-sample float tensor.
            for time in (t, torch.full((batch,), float(t))):
                expected = official(x_t, mu, time)
                got = ours(x_t, mu, time)
                if got.shape != expected.shape:
                    raise SystemExit(f"shapes differ: ours {got.shape}, official {expected.shape}")
                worst = max(worst, (got - expected).abs().max().item())
    return worst


def run_case(
    label: str, official: nn.Module, ckpt: Path | None, generator: torch.Generator, tol: float
) -> bool:
    with tempfile.TemporaryDirectory() as tmp:
        if ckpt is None:
            randomise(official, generator)
            ckpt_used = Path(tmp) / "official.pth"
            torch.save(official.state_dict(), ckpt_used)
        else:
            ckpt_used = ckpt  # the caller has loaded it into the official network already
        ours = load_network(ckpt_used)
    official.eval()
    first_conv = official.init_conv if hasattr(official, "init_conv") else official.intro
    channels = first_conv.weight.shape[1] // 2  # both networks see cat[x_t - mu, mu]
    with torch.no_grad():
        probe = torch.rand(1, channels, 32, 32, generator=generator)
        scale = official(probe, probe * 0.5, 10).abs().max().item()
    diff = max_difference(official, ours, channels, generator)
    params = count_parameters(ours)
    verdict = "ok" if diff <= tol else "FAIL"
    print(f"{label:<48} {params / 1e6:7.2f} M params  max|out| {scale:8.3g}  max|diff| {diff:.3e}  {verdict}")
    return diff <= tol


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--official-repo", type=Path, required=True, help="checkout of Algolzw/image-restoration-sde"
    )
    parser.add_argument("--ckpt", type=Path, help="weights file to compare on instead of random weights")
    parser.add_argument("--task", default="deraining", help="codes/config/<task> to import the networks from")
    parser.add_argument("--tol", type=float, default=1e-5, help="largest accepted absolute difference")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    generator = torch.Generator().manual_seed(args.seed)
    torch.manual_seed(args.seed)
    official = import_official_modules(args.official_repo, args.task)

    if args.ckpt is not None:
        state_dict = load_state_dict_any(args.ckpt)
        if "init_conv.weight" not in state_dict and "intro.weight" not in state_dict:
            raise SystemExit(f"{args.ckpt}: no IR-SDE network found (keys start {list(state_dict)[:5]})")
        if "init_conv.weight" in state_dict:
            cfg = infer_unet_config(state_dict)
            layout = unet_layout(official, cfg)
            net = official.ConditionalUNet(cfg["in_nc"], cfg["out_nc"], cfg["nf"], **layout)
        else:
            net = official.ConditionalNAFNet(**infer_nafnet_config(state_dict))
        net.load_state_dict(state_dict, strict=True)
        return 0 if run_case(args.ckpt.name, net, args.ckpt, generator, args.tol) else 1

    cases = [
        ("ConditionalUNet nf=64 depth=4", lambda: official.ConditionalUNet(3, 3, 64, depth=4)),
        ("ConditionalUNet nf=32 depth=4 (inpainting)", lambda: official.ConditionalUNet(3, 3, 32, depth=4)),
        (
            "ConditionalNAFNet w=64 enc 1,1,1,28 (Refusion)",
            lambda: official.ConditionalNAFNet(
                img_channel=3,
                width=64,
                middle_blk_num=1,
                enc_blk_nums=[1, 1, 1, 28],
                dec_blk_nums=[1, 1, 1, 1],
            ),
        ),
    ]
    try:  # the ch_mult layout exists only in the latent-dehazing code, whose package also imports DiT etc.
        latent = import_official_modules(args.official_repo, "latent-dehazing")
        cases.append(("ConditionalUNet nf=32 ch_mult 1,2,4,4 (latent)",
                      lambda: latent.ConditionalUNet(3, 3, 32, ch_mult=[1, 2, 4, 4])))
    except (ImportError, SystemExit) as err:
        print(f"skipping the ch_mult variant: {err}")
    ok = True
    for label, make in cases:
        ok &= run_case(label, make(), None, generator, args.tol)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
