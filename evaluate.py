"""Evaluate a model, or score images that already exist (config: configs/evaluate.yaml).

  python evaluate.py ckpt=runs/.../checkpoints/last.ckpt [data.root=DIR] [sampler=ode] [steps=25] [out=DIR]
  python evaluate.py weights=lastest_EMA.pth experiment=irsde_rain100h data.root=DIR   (official release weights)
  python evaluate.py model=diffpir prior_ckpt=PRIOR task=sr_x4 data=celebahq noise_sigma=0.05 nfe=100
  python evaluate.py restored=DIR gt=DIR [data=rain100h | convention=y|rgb crop_border=N] [out=DIR]
  python evaluate.py restored=DIR [crop_border=N]     (no ground truth: NIQE only)
  python evaluate.py ckpt=... trainer.devices=4 [trainer.num_nodes=2] [trainer.strategy=ddp]   (many devices)

Prints a table (PSNR, SSIM, LPIPS, FID, NFEs, seconds per image), writes out/metrics.json (means at the top
level), out/per_image.csv, the restored PNGs (out/images/) and LQ | restored | GT panels (out/preview.png).
On N devices every rank restores its shard of the images through Lightning's Trainer.test (core.inference) and
the files are those of one process: each image's noise depends only on seed= and the image.
"""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from core.cli import CONFIG_DIR, caught, run_hydra, user_errors

RESULT: list[dict] = []


def evaluate(cfg: DictConfig) -> dict:
    from torch.utils.data import Subset

    from core import evaluation as ev
    from core.cli import trainer_arguments
    from core.errors import ConfigError
    from core.inference import EvaluationModule, inference_trainer
    from core.loading import instantiate, restorer_source
    from core.restorer import OPTION_KEYS, build_restorer

    trainer_args = trainer_arguments(cfg.trainer)
    module, run_cfg, source = restorer_source(cfg)
    if run_cfg.get("data") is None:
        raise ConfigError(f"{source} carries no data settings: choose the images to evaluate on with "
                          "data=celebahq|div2k|demo_faces|folders|... (and data.root=DIR)")
    datamodule = instantiate(OmegaConf.create(OmegaConf.to_container(run_cfg.data, resolve=True)))
    datamodule.setup("test")
    dataset = datamodule.test_set
    if cfg.max_images is not None:
        dataset = Subset(dataset, range(min(int(cfg.max_images), len(dataset))))
    convention = {"y_channel": bool(datamodule.metric_y_channel),
                  "crop_border": int(datamodule.metric_crop_border), **_user_convention(cfg)}
    data_name = getattr(datamodule, "name", run_cfg.data.get("_target_", "data").split(".")[-1])
    run_name = Path(cfg.ckpt or cfg.weights or cfg.get("prior_ckpt") or "model").stem
    out = Path(cfg.out or Path("runs/eval") / f"{run_name}_{data_name}")

    def save(name: str, image) -> None:
        if cfg.save_images:
            ev.write_image(out / "images" / f"{name}.png", image)

    options = {k: cfg.get(k) for k in OPTION_KEYS}
    described = build_restorer(module, options)  # on the CPU, before any device: its description and scoring
    convention.update({k: v for k, v in described.scoring().items() if k not in _user_convention(cfg)})
    trainer = inference_trainer(trainer_args, cfg.device)
    if trainer.is_global_zero:
        print(f"model: {source} ({described.describe()})")
    runner = EvaluationModule(
        module, options, dataset, out, precision=cfg.precision, compile=cfg.compile, progress=cfg.progress,
        seed=int(cfg.seed), num_workers=int(getattr(datamodule, "num_workers", 0) or 0), desc="evaluating",
        metrics=ev.ImageMetrics(**convention, perceptual=cfg.perceptual), panels=int(cfg.panels), on_image=save)
    trainer.test(runner, verbose=False)
    restorer, rows = runner.restorer, runner.rows
    summary = {**runner.summary, "dataset": data_name, "nfe": restorer.nfe(), "model": source,
               "sampler": restorer.settings(), "convention": "y" if convention["y_channel"] else "rgb",
               "crop_border": convention["crop_border"], "device": str(trainer.strategy.root_device.type),
               "processes": trainer.world_size}
    summary["seconds_per_image"] = summary.pop("seconds", None)
    if trainer.is_global_zero:
        ev.write_results(out, summary, rows)
        if runner.preview:
            ev.write_preview(out / "preview.png", runner.preview)
        ev.report(summary, rows, cfg.per_image)
        print(f"wrote {out / 'metrics.json'}, per_image.csv, images/ and preview.png (LQ | restored | GT)")
    return summary


def score_folders(cfg: DictConfig) -> dict:
    """Score restored images against ground truth with the same metric code as every evaluation, or alone
    (restored=DIR without gt=) with the no-reference NIQE."""
    from core import evaluation as ev
    from core.errors import ConfigError
    from data.layouts import folder_pairs

    if not cfg.restored:
        raise ConfigError("scoring existing images needs restored=DIR (and gt=DIR for PSNR/SSIM/LPIPS/DISTS)")
    data = cfg.get("data") or {}
    convention = {"y_channel": bool(data.get("metric_y_channel", False)),
                  "crop_border": int(data.get("metric_crop_border", 0)), **_user_convention(cfg)}
    if cfg.gt:
        metrics = ev.ImageMetrics(**convention, perceptual=cfg.perceptual)
        rows = ev.score_files(folder_pairs(cfg.restored, cfg.gt), metrics)
        summary = {**metrics.summary(rows), "dataset": Path(cfg.gt).name,
                   "convention": "y" if convention["y_channel"] else "rgb", "crop_border": convention["crop_border"]}
    else:  # no reference: NIQE on the Y channel (BasicSR's calculate_niqe), whatever the convention
        from core.noreference import score_folder

        rows, summary = score_folder(cfg.restored, convention["crop_border"])
        summary = {**summary, "dataset": Path(cfg.restored).name, "convention": "y",
                   "crop_border": convention["crop_border"]}
    out = Path(cfg.out or Path(cfg.restored).parent / "scores")
    ev.write_results(out, summary, rows)
    ev.report(summary, rows, cfg.per_image)
    print(f"wrote {out / 'metrics.json'}")
    return summary


def _user_convention(cfg: DictConfig) -> dict:
    """convention=y|rgb and crop_border=N override the data's (and the method's) metric convention."""
    from core.errors import ConfigError

    if cfg.convention not in (None, "y", "rgb"):
        raise ConfigError(f"convention={cfg.convention}: use convention=y or convention=rgb")
    return {**({"y_channel": cfg.convention == "y"} if cfg.convention else {}),
            **({"crop_border": int(cfg.crop_border)} if cfg.crop_border is not None else {})}


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="evaluate")
def _hydra_main(cfg: DictConfig) -> None:
    RESULT.append(caught(score_folders if cfg.restored or cfg.gt else evaluate, cfg))


def main(argv: list[str] | None = None) -> dict:
    """Run with `argv` as the command line (default sys.argv); returns the summary written to metrics.json."""
    return run_hydra(_hydra_main, "evaluate", argv, RESULT)


if __name__ == "__main__":
    with user_errors():
        main()
