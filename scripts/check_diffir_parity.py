"""Check that our DiffIR networks reproduce the official ones, output for output.

    python scripts/check_diffir_parity.py --official-repo PATH [--tol 1e-5]

PATH is a local checkout of Zj-BinXia/DiffIR (it needs ``einops``; ``basicsr`` is not needed: its arch
registry is replaced by a stub). The official ``DiffIRS1`` / ``DiffIRS2`` of three sub-projects are imported
from it at run time (nothing is copied): GoPro deblurring (DiffIR-demotionblur), SR x4 (DiffIR-SRGAN) and
inpainting (DiffIR-inpainting), each in its official configuration. Each official network gets random weights
(constant-initialised tensors are perturbed so that every branch matters), its state dict is saved as a
BasicSR file (``params_ema``) and loaded back through ``diffir.official.load_network``. Both networks then run
on the same random inputs, an aligned and an odd size; the official side is padded and cropped as its test
code does (reflection to a multiple of 8). Stage 2 runs from the same seed, so both draw the same starting
noise; the script compares the sampled IPRs, checks that both leave the RNG in the same state, and compares
the training chain (from a stage-1 IPR) step by step. Prints the largest absolute differences; exit status 1
above ``--tol``.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import sys
import tempfile
from pathlib import Path
from types import ModuleType

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the suite's root, when run as a script

from diffir.official import load_network  # noqa: E402

GOPRO = dict(n_encoder_res=5, inp_channels=3, out_channels=3, dim=48, num_blocks=[3, 5, 6, 6],
             num_refinement_blocks=4, heads=[1, 2, 4, 8], ffn_expansion_factor=2, bias=False,
             LayerNorm_type="WithBias")
SR_X4 = dict(n_encoder_res=9, dim=64, num_blocks=[13, 1, 1, 1], num_refinement_blocks=13, heads=[1, 2, 4, 8],
             ffn_expansion_factor=2.2, bias=False, LayerNorm_type="BiasFree", scale=4)
INPAINT = dict(n_encoder_res=5, inp_channels=4, out_channels=3, dim=52, num_blocks=[1, 1, 1, 9],
               num_refinement_blocks=0, heads=[1, 2, 4, 8], ffn_expansion_factor=1.8, bias=False,
               LayerNorm_type="WithBias")
DDPM = dict(n_denoise_res=1, linear_start=0.1, linear_end=0.99, timesteps=4)
# name, sub-project, constructor kwargs, lq channels, SR scale, (aligned, odd) low-quality sizes
CASES = (
    ("GoPro deblur", "DiffIR-demotionblur", GOPRO, 3, 1, ((64, 64), (50, 38))),
    ("SR x4", "DiffIR-SRGAN", SR_X4, 3, 4, ((32, 32), (27, 21))),
    ("inpainting", "DiffIR-inpainting", INPAINT, 4, 1, ((64, 64), (50, 38))),
)
WINDOW = 8  # the official test-time padding multiple (window_size 8 in every yml)
STUBBED = ("DiffIR", "archs", "ldm", "basicsr")


class _Registry:
    """Stand-in for basicsr's ARCH_REGISTRY: ``register()`` returns a no-op decorator."""

    def register(self, obj=None):
        return (lambda cls: cls) if obj is None else obj


def _package(name: str, path: Path | None = None) -> ModuleType:
    module = ModuleType(name)
    module.__path__ = [str(path)] if path is not None else []
    sys.modules[name] = module
    return module


def import_official(repo: Path, subproject: str) -> tuple[type, type]:
    """(DiffIRS1, DiffIRS2) of one sub-project, imported from its files without running package __init__s."""
    base = repo / subproject
    if not base.is_dir():
        raise SystemExit(f"{base} not found: pass the root of a checkout of Zj-BinXia/DiffIR")
    for name in list(sys.modules):
        if name.split(".")[0] in STUBBED:
            del sys.modules[name]
    sys.path[:] = [p for p in sys.path if not p.startswith(str(repo))]
    sys.path.insert(0, str(base))  # for the sub-project's own ``ldm`` (a namespace package)
    importlib.invalidate_caches()
    _package("basicsr")
    _package("basicsr.utils")
    _package("basicsr.utils.registry").ARCH_REGISTRY = _Registry()
    if (base / "DiffIR" / "archs").is_dir():
        _package("DiffIR", base / "DiffIR")
        _package("DiffIR.archs", base / "DiffIR" / "archs")
        pkg = "DiffIR.archs"
    else:
        _package("archs", base / "archs")
        pkg = "archs"
    with contextlib.redirect_stdout(io.StringIO()):  # the official DDPM prints its mode
        s1 = importlib.import_module(f"{pkg}.S1_arch")
        s2 = importlib.import_module(f"{pkg}.S2_arch")
    return s1.DiffIRS1, s2.DiffIRS2


@torch.no_grad()
def randomise(net: nn.Module, generator: torch.Generator) -> None:
    """Perturb constant-initialised tensors (norm gains/biases, attention temperatures) and jitter the rest
    relative to their own spread, so that every parameter matters while activations stay finite."""
    for param in net.parameters():
        spread = param.std().item() if param.numel() > 1 else 0.0
        scale = 0.1 if spread == 0.0 else 0.3 * spread
        param.add_(torch.randn(param.shape, generator=generator) * scale)


def official_pad(x: torch.Tensor, multiple: int, factor: int = 1) -> tuple[torch.Tensor, int, int]:
    """The official ``pad_test``: reflect-pad right/bottom to a multiple (amounts scaled by ``factor``)."""
    h, w = x.shape[-2] // factor, x.shape[-1] // factor
    pad_h, pad_w = (-h) % multiple, (-w) % multiple
    return F.pad(x, (0, pad_w * factor, 0, pad_h * factor), mode="reflect"), pad_h, pad_w


def _first(out):
    return out[0] if isinstance(out, (tuple, list)) else out


def _save_as_basicsr(net: nn.Module, folder: Path, name: str) -> Path:
    path = folder / f"{name}.pth"
    torch.save({"params_ema": net.state_dict()}, path)
    return path


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    if a.shape != b.shape:
        raise SystemExit(f"shape mismatch: official {tuple(a.shape)} vs ours {tuple(b.shape)}")
    return (a - b).abs().max().item()


def _inputs(lq_channels: int, scale: int, size: tuple[int, int], gen: torch.Generator):
    h, w = size
    lq = torch.rand(1, lq_channels, h, w, generator=gen)
    if lq_channels == 4:  # inpainting: masked image and mask, as the official trainer builds them
        mask = (torch.rand(1, 1, h, w, generator=gen) > 0.7).float()
        lq = torch.cat([lq[:, :3] * (1 - mask), mask], dim=1)
    gt = torch.rand(1, 3, h * scale, w * scale, generator=gen)
    return lq, gt


def check_case(repo: Path, folder: Path, case: tuple, seed: int) -> dict[str, float]:
    name, subproject, kwargs, lq_channels, scale, sizes = case
    off_s1_cls, off_s2_cls = import_official(repo, subproject)
    gen = torch.Generator().manual_seed(seed)
    diffs: dict[str, float] = {}
    with contextlib.redirect_stdout(io.StringIO()):
        off_s1 = off_s1_cls(**kwargs)
        off_s2 = off_s2_cls(**kwargs, **DDPM)
    randomise(off_s1, gen)
    randomise(off_s2, gen)
    off_s1.eval()
    off_s2.eval()
    ours_s1 = load_network(_save_as_basicsr(off_s1, folder, f"{subproject}_s1"))
    ours_s2 = load_network(_save_as_basicsr(off_s2, folder, f"{subproject}_s2"))
    with torch.no_grad():
        for size in sizes:
            lq, gt = _inputs(lq_channels, scale, size, gen)
            tag = f"{size[0]}x{size[1]}"
            lq_p, ph, pw = official_pad(lq, WINDOW)
            gt_p, _, _ = official_pad(gt, WINDOW, scale)
            h_out, w_out = size[0] * scale, size[1] * scale
            ref = _first(off_s1(lq_p, gt_p))[..., :h_out, :w_out]
            diffs[f"S1 {tag}"] = _max_diff(ref, ours_s1(lq, gt))

            torch.manual_seed(seed)
            ref = _first(off_s2(lq_p))[..., :h_out, :w_out]
            ref_next = torch.randn(8)
            torch.manual_seed(seed)
            ours = ours_s2(lq)
            diffs[f"S2 {tag}"] = _max_diff(ref, ours)
            diffs[f"S2 {tag} RNG state after"] = _max_diff(ref_next, torch.randn(8))
            # The sampled IPR itself (the image depends on it only weakly with random weights).
            torch.manual_seed(seed)
            ref_ipr = off_s2.diffusion(lq_p)
            torch.manual_seed(seed)
            diffs[f"S2 {tag} sampled IPR"] = _max_diff(ref_ipr, ours_s2.estimate_ipr(lq))

        # Training chain on an aligned size: stage-1 IPR diffused to t = T-1 and denoised in T steps.
        lq, _ = _inputs(lq_channels, scale, sizes[0], gen)
        ipr_s1 = torch.randn(1, 256, generator=gen)
        off_s2.train()
        torch.manual_seed(seed)
        ref_sr, ref_steps = off_s2(lq, ipr_s1)
        torch.manual_seed(seed)
        sr, _, steps = ours_s2.forward_train(lq, ipr_s1)
        off_s2.eval()
        diffs["S2 train chain output"] = _max_diff(ref_sr, sr)
        diffs["S2 train chain IPRs"] = max(_max_diff(a, b) for a, b in zip(ref_steps, steps, strict=True))
    return diffs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--official-repo", type=Path, required=True, help="checkout of Zj-BinXia/DiffIR")
    parser.add_argument("--tol", type=float, default=1e-5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    repo = args.official_repo.resolve()
    worst = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        for case in CASES:
            diffs = check_case(repo, Path(tmp), case, args.seed)
            for label, value in diffs.items():
                print(f"{case[0]:>13} | {label:<28} max |official - ours| = {value:.3e}")
                worst = max(worst, value)
    ok = worst <= args.tol
    print(f"worst difference {worst:.3e}: {'OK' if ok else 'FAIL'} (tolerance {args.tol:g})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
