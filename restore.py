"""Restore your own images with a trained model.

  python restore.py ckpt=runs/.../checkpoints/last.ckpt input=photos/ output=restored/ [tile=512] [overlap=32]
  python restore.py weights=lastest_EMA.pth experiment=irsde_rain100h input=img.png output=out/
  python restore.py model=diffpir prior_ckpt=PRIOR task=inpainting input=photo.png mask=mask.png output=out/
  python restore.py model=diffpir prior_ckpt=PRIOR task=deblur_motion input=blurry.png kernel=k.npy noise_sigma=0.01
  python restore.py model=diffpir prior_ckpt=PRIOR task=sr_x4 input=lr.png output=out/   (output 4x larger)

Any image size works. With tile=N the network runs on overlapping N x N tiles blended smoothly, so a 2K image
fits in a fixed memory budget (tiling wraps each network evaluation, so a sampler's noise stays consistent
across tiles). Options: sampler=, steps=, seed=, device=, precision=bf16.
DiffPIR takes the input as the measurement y of its task: mask=FILE (white = known pixel) or a folder of masks
named like the inputs for inpainting, kernel=FILE for deblurring; the other options are in diffpir/cli.py.
"""

from __future__ import annotations

import sys
import zlib
from pathlib import Path

from core.cli import check_override_keys, parse_overrides, user_errors
from diffpir.cli import KEYS as DIFFPIR_KEYS

OWN_KEYS = ("ckpt", "weights", "experiment", "input", "output", "tile", "overlap", "sampler", "steps", "sigma",
            "seed", "device", "precision", "progress")


def main(argv: list[str]) -> list[Path]:
    import torch
    from omegaconf import OmegaConf
    from tqdm import tqdm

    from core.errors import ConfigError, DataError
    from core.io import list_images, read_image, to_tensor, write_image
    from core.loading import module_from_checkpoint, module_from_weights, pick_device

    args = dict(parse_overrides(argv).items())
    for key in ("input", "output"):
        if not args.get(key):
            raise ConfigError(f"missing {key}=...: python restore.py ckpt=PATH input=FOLDER_OR_FILE output=FOLDER")
    from diffpir.cli import measurement_extras, restorer_from_args, wants_diffpir

    diffpir = wants_diffpir(args)
    overrides = OmegaConf.create({k: v for k, v in args.items() if k not in OWN_KEYS + DIFFPIR_KEYS})
    check_override_keys(overrides, OWN_KEYS + (DIFFPIR_KEYS if diffpir else ()))
    if diffpir:
        module, _ = restorer_from_args(args)
    elif args.get("ckpt"):
        module, _ = module_from_checkpoint(args["ckpt"], overrides)
        if hasattr(module, "restorer"):  # a DiffPIR prior: the task and its mask/kernel must be named
            raise ConfigError(f"ckpt={args['ckpt']} is a DiffPIR prior: restore with model=diffpir "
                              f"prior_ckpt={args['ckpt']} task=inpainting|sr_x4|deblur_gaussian|... "
                              "(and mask= or kernel=)")
    elif args.get("weights") and args.get("experiment"):
        module, _ = module_from_weights(args["weights"], args["experiment"])
    else:
        raise ConfigError("pass ckpt=PATH (a suite checkpoint), weights=PATH experiment=NAME (release weights) "
                          "or model=diffpir prior_ckpt=PATH task=NAME")
    source = Path(args["input"])
    if source.is_file():
        files = [source]
    elif source.is_dir():
        files = list_images(source)
    else:
        raise DataError(f"input={source}: no such file or folder")
    if not files:
        raise DataError(f"input={source}: no images found (png, jpg, bmp, tif, webp)")
    device = pick_device(args.get("device"))
    module.to(device)
    options = {k: args[k] for k in ("sampler", "steps", "sigma", "tile", "overlap") if args.get(k) is not None}
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.get("precision") == "bf16")
    out_dir = Path(args["output"])
    written = []
    for path in tqdm(files, desc="restoring", disable=not args.get("progress", True)):
        lq = to_tensor(read_image(path))[None].to(device)
        # seeded by the file name: an image restores the same alone or within a folder
        seed = int(args.get("seed", 0)) + zlib.crc32(path.name.encode())
        generator = torch.Generator(device=device).manual_seed(seed)
        with autocast:
            extras = measurement_extras(args, path, lq) if diffpir else {}
            restored = module.restore(lq, generator=generator, **extras, **options).float()
        target = out_dir / f"{path.stem}.png"
        write_image(target, restored[0].cpu())
        written.append(target)
    print(f"restored {len(written)} image(s) into {out_dir}")
    return written


if __name__ == "__main__":
    with user_errors():
        main(sys.argv[1:])
