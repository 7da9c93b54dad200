"""Restore your own images with a trained model (config: configs/restore.yaml).

  python restore.py ckpt=runs/.../checkpoints/last.ckpt input=photos/ output=restored/ [tile=512] [overlap=32]
  python restore.py weights=lastest_EMA.pth experiment=irsde_rain100h input=img.png output=out/
  python restore.py model=diffpir prior_ckpt=PRIOR task=inpainting input=photo.png mask=mask.png output=out/
  python restore.py model=diffpir prior_ckpt=PRIOR task=deblur_motion input=blurry.png kernel=k.npy noise_sigma=0.01
  python restore.py model=diffpir prior_ckpt=PRIOR task=sr_x4 input=lr.png output=out/   (output 4x larger)

Any image size works. With tile=N the network runs on overlapping N x N tiles blended smoothly, so a 2K image
fits in a fixed memory budget (tiling wraps each network evaluation, so a sampler's noise stays consistent
across tiles). The input is the model's measurement: for inpainting, mask=FILE (white = known pixel) or a
folder of masks named like the inputs.
"""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig

from core.cli import CONFIG_DIR, caught, run_hydra, user_errors

RESULT: list[list[Path]] = []


def restore(cfg: DictConfig) -> list[Path]:
    import torch
    from tqdm import tqdm

    from core.errors import ConfigError, DataError
    from core.io import image_seed, list_images, read_image, to_tensor, write_image
    from core.loading import pick_device, restorer_source
    from core.restorer import OPTION_KEYS, build_restorer, prepare_for_inference
    from data.masks import mask_for

    for key in ("input", "output"):
        if not cfg.get(key):
            raise ConfigError(f"missing {key}=...: python restore.py ckpt=PATH input=FOLDER_OR_FILE output=FOLDER")
    source = Path(cfg.input)
    files = [source] if source.is_file() else list_images(source) if source.is_dir() else None
    if files is None:
        raise DataError(f"input={source}: no such file or folder")
    if not files:
        raise DataError(f"input={source}: no images found (png, jpg, bmp, tif, webp)")
    module, _, description = restorer_source(cfg)
    device = pick_device(cfg.device)
    module = prepare_for_inference(module, device, cfg.precision)
    restorer = build_restorer(module, {k: cfg.get(k) for k in OPTION_KEYS}, progress=cfg.progress,
                              compile=cfg.compile)
    print(f"model: {description} ({restorer.describe()})")
    written = []
    for path in tqdm(files, desc="restoring", disable=not cfg.progress):
        lq = to_tensor(read_image(path))[None].to(device)
        # seeded by the file name: an image restores the same alone or within a folder
        generator = torch.Generator(device=device).manual_seed(image_seed(cfg.seed, path.name))
        conditions = {"mask": mask_for(cfg.mask, path, lq)} if "mask" in restorer.conditions and cfg.mask else {}
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=str(cfg.precision) == "bf16"):
            restored = restorer.restore(lq, generator=generator, **conditions).float()
        target = Path(cfg.output) / f"{path.stem}.png"
        write_image(target, restored[0].cpu())
        written.append(target)
    print(f"restored {len(written)} image(s) into {cfg.output}")
    return written


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="restore")
def _hydra_main(cfg: DictConfig) -> None:
    RESULT.append(caught(restore, cfg))


def main(argv: list[str] | None = None) -> list[Path]:
    """Run with `argv` as the command line (default sys.argv); returns the written files."""
    return run_hydra(_hydra_main, "restore", argv, RESULT)


if __name__ == "__main__":
    with user_errors():
        main()
