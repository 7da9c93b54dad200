"""The DiffPIR options of evaluate.py and restore.py (model=diffpir prior_ckpt=... task=...).

  prior_ckpt=PATH   a suite prior checkpoint (train.py experiment=diffpir_prior_*) or a guided-diffusion file
                    (ffhq_10m.pt, 256x256_diffusion_uncond.pt); preset=NAME forces a configuration
  task=NAME         sr_x2 | sr_x4 | deblur_gaussian | deblur_motion | inpainting
  noise_sigma=S     σ_n of the measurement in [0, 1] units (official: 0.05; 0 for inpainting)
  nfe= lam= zeta= skip=quad|uniform t_start= eta=   sampler settings (defaults: the official ones per task)
  mask=batch|box|pixels|strokes|FILE   inpainting masks (FILE: white = known; a folder: one per image name)
  kernel=FILE       a blur kernel (.npy summing to 1, or an image, normalised) instead of the official ones
  kernel_size=N     size of the generated official kernels (61; smaller for small images)
  sr_mode=fft|backprojection
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from core.errors import ConfigError

KEYS = ("model", "prior_ckpt", "preset", "task", "noise_sigma", "nfe", "lam", "zeta", "skip", "t_start", "eta",
        "mask", "kernel", "kernel_size", "sr_mode", "return_last_prediction")
SETTING_KEYS = {"noise_sigma": "sigma_n", "nfe": "nfe", "lam": "lam", "zeta": "zeta", "skip": "skip",
                "t_start": "t_start", "eta": "eta", "return_last_prediction": "return_last_prediction"}
GENERATED_MASKS = ("batch", "box", "pixels", "strokes")


def wants_diffpir(args: dict) -> bool:
    from core.cli import group_choice

    model = group_choice(args, "model")  # model.sde.T=... style overrides are not a choice
    if model is not None and model != "diffpir":
        raise ConfigError(f"model={model}: only model=diffpir is chosen this way (checkpoints carry their model)")
    return model == "diffpir"


def read_kernel(path: str | Path):
    """A user's kernel: .npy must already sum to 1; an image (0..255) is divided by its sum."""
    from diffpir.kernels import IMAGE_SUFFIXES, load_kernel

    return load_kernel(path, normalize=Path(path).suffix.lower() in IMAGE_SUFFIXES)


def restorer_from_args(args: dict[str, Any]):
    """(DiffPIRRestorer, stored run config or None) from the command-line arguments."""
    from diffpir.official import load_prior_with_config
    from diffpir.restorer import DiffPIRRestorer
    from diffpir.schedule import DDPMSchedule

    path = args.get("prior_ckpt")
    if not path:
        raise ConfigError("model=diffpir needs prior_ckpt=PATH: a prior trained with train.py "
                          "experiment=diffpir_prior_... or a guided-diffusion file such as ffhq_10m.pt")
    if not args.get("task"):
        raise ConfigError("model=diffpir needs task=sr_x4|sr_x2|deblur_gaussian|deblur_motion|inpainting")
    if not Path(path).is_file():
        raise ConfigError(f"prior_ckpt={path}: no such file")
    prior, config = load_prior_with_config(path, preset=args.get("preset"))
    schedule_cfg = ((config or {}).get("model") or {}).get("schedule") or {}
    mask = str(args.get("mask", "batch"))
    if mask not in GENERATED_MASKS and not Path(mask).exists():
        raise ConfigError(f"mask={mask}: use batch (the data's masks), box, pixels, strokes, or a mask file / "
                          "folder of masks named like the inputs (restore.py; white = known pixel)")
    settings = {name: args[key] for key, name in SETTING_KEYS.items() if args.get(key) is not None}
    restorer = DiffPIRRestorer(
        prior, str(args["task"]), schedule=DDPMSchedule(**schedule_cfg),
        mask=mask if mask in GENERATED_MASKS else "batch",
        kernel=read_kernel(args["kernel"]) if args.get("kernel") else None,
        kernel_size=int(args.get("kernel_size", 61)), sr_mode=args.get("sr_mode", "fft"),
        prior_name=Path(path).name, **settings)
    return restorer, config


def measurement_extras(args: dict[str, Any], image_path: Path, lq) -> dict:
    """restore.py: the mask of one input image for inpainting (mask=FILE or a folder of masks by name)."""
    mask = args.get("mask")
    if mask is None or mask in GENERATED_MASKS:
        return {}
    import torch

    from core.errors import DataError
    from core.io import list_images
    from data.degradations import read_mask

    source = Path(mask)
    if source.is_dir():
        matches = [p for p in list_images(source) if p.stem == image_path.stem]
        if not matches:
            raise DataError(f"mask={source}: no mask named {image_path.stem}.* for the input {image_path.name}")
        source = matches[0]
    elif not source.is_file():
        raise DataError(f"mask={source}: no such file or folder (white = known pixel, black = to fill)")
    height, width = lq.shape[-2:]
    array = read_mask(source, None)
    if array.shape != (height, width):
        raise DataError(f"mask={source} is {array.shape[0]}x{array.shape[1]} but {image_path.name} is "
                        f"{height}x{width}: the mask must have the image's size")
    return {"mask": torch.from_numpy(array)[None, None].to(lq.device)}
