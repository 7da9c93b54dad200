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

A large folder: trainer.devices=N shards the files over N processes (GPUs, or CPU processes), one bar counts the
images of all ranks; a rerun skips inputs whose output exists (written atomically, so complete; overwrite=true
redoes them); a bad image is reported at the end and in output/failed.txt, the others are restored, and the exit
status is non-zero (on_error=stop stops at the first).
"""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig

from core.cli import CONFIG_DIR, caught, run_hydra, user_errors

RESULT: list[list[Path]] = []


def restore(cfg: DictConfig) -> list[Path]:
    from core.cli import trainer_arguments
    from core.errors import ConfigError, DataError
    from core.inference import PathList, RestorationModule, inference_trainer
    from core.io import list_images
    from core.loading import restorer_source
    from core.restorer import OPTION_KEYS, build_restorer

    trainer_args = trainer_arguments(cfg.trainer)
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
    options = {k: cfg.get(k) for k in OPTION_KEYS}
    trainer = inference_trainer(trainer_args, cfg.device)
    if trainer.is_global_zero:
        print(f"model: {description} ({build_restorer(module, options).describe()})")
    output = Path(cfg.output)
    runner = RestorationModule(module, options, PathList(files), output, precision=cfg.precision,
                               compile=cfg.compile, progress=cfg.progress, seed=int(cfg.seed), desc="restoring",
                               output=output, mask=cfg.mask, overwrite=cfg.overwrite, on_error=cfg.on_error)
    trainer.predict(runner, return_predictions=False)
    counts, failures = runner.counts, runner.failures
    failed_list = output / "failed.txt"
    if trainer.is_global_zero:
        if failures:
            output.mkdir(parents=True, exist_ok=True)
            failed_list.write_text("".join(f"{name}\t{reason}\n" for name, reason in failures))
            for name, reason in failures:
                print(f"failed: {name}: {reason}")
        elif failed_list.is_file():
            failed_list.unlink()  # from an earlier run whose failures are now restored
        print(f"restored {counts['restored']}, skipped {counts['skipped']} (output exists; overwrite=true redoes "
              f"them), failed {counts['failed']} of {len(files)} image(s) into {output}")
    if failures:
        stop = " (on_error=stop: stopped at the first)" if cfg.on_error == "stop" else ""
        raise DataError(f"{len(failures)} image(s) failed{stop}, listed in {failed_list}: first "
                        f"{failures[0][0]}: {failures[0][1]}")
    return runner.written


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="restore")
def _hydra_main(cfg: DictConfig) -> None:
    RESULT.append(caught(restore, cfg))


def main(argv: list[str] | None = None) -> list[Path]:
    """Run with `argv` as the command line (default sys.argv); returns the written files."""
    return run_hydra(_hydra_main, "restore", argv, RESULT)


if __name__ == "__main__":
    with user_errors():
        main()
