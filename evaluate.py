"""Evaluate a model, or score images that already exist.

  python evaluate.py ckpt=runs/.../checkpoints/last.ckpt [data.root=DIR] [sampler=ode] [steps=25] [out=DIR]
  python evaluate.py weights=lastest_EMA.pth experiment=irsde_rain100h data.root=DIR   (official release weights)
  python evaluate.py restored=DIR gt=DIR [data=rain100h | convention=y|rgb crop_border=N] [out=DIR]
  python evaluate.py model=diffpir prior_ckpt=PRIOR task=sr_x4 data=celebahq noise_sigma=0.05 nfe=100
                     (DiffPIR: measurements simulated from the ground truth; options in diffpir/cli.py)

Prints a table (PSNR, SSIM, LPIPS, FID, NFEs, seconds per image), writes out/metrics.json (means at the top
level), out/per_image.csv, the restored PNGs (out/images/) and LQ | restored | GT panels (out/preview.png).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from core.cli import check_override_keys, parse_overrides, user_errors
from diffpir.cli import KEYS as DIFFPIR_KEYS

# keys of evaluate.py itself; every other key=value overrides the run config (data.root=..., model.sde.T=...)
EVAL_KEYS = ("ckpt", "weights", "experiment", "out", "sampler", "steps", "sigma", "max_images", "device",
             "precision", "seed", "save_images", "panels", "per_image", "restored", "gt", "convention",
             "crop_border", "progress", "perceptual", "split")


def score_folders(args) -> dict:
    """Score restored images against ground truth with the same metric code as every evaluation."""
    from core.errors import ConfigError
    from core.evaluation import SUMMARY_COLUMNS, Scorer, format_table, write_results
    from core.io import read_image
    from data.layouts import folder_pairs

    y_channel, crop_border = False, 0
    from core.cli import group_choice

    if group_choice(args, "data"):
        from core.cli import load_group

        data_cfg = load_group("data", group_choice(args, "data"))
        y_channel = bool(data_cfg.get("metric_y_channel", False))
        crop_border = int(data_cfg.get("metric_crop_border", 0))
    if args.get("convention"):
        if args["convention"] not in ("y", "rgb"):
            raise ConfigError(f"convention={args['convention']}: use convention=y or convention=rgb")
        y_channel = args["convention"] == "y"
    if args.get("crop_border") is not None:
        crop_border = int(args["crop_border"])
    pairs = folder_pairs(args["restored"], args["gt"])
    scorer = Scorer(y_channel=y_channel, crop_border=crop_border, perceptual=args.get("perceptual", True))
    for pair in pairs:
        scorer.add(pair.name, read_image(pair.lq), read_image(pair.gt))
    summary = {**scorer.summary(), "dataset": Path(args["gt"]).name, "convention": "y" if y_channel else "rgb",
               "crop_border": crop_border}
    out = Path(args.get("out") or Path(args["restored"]).parent / "scores")
    write_results(out, summary, scorer.rows)
    print(format_table([summary], [c for c in SUMMARY_COLUMNS if c[0] not in ("nfe", "seconds_per_image")]))
    print(f"wrote {out / 'metrics.json'}")
    return summary


def evaluate_model(args) -> dict:
    import torch
    from omegaconf import OmegaConf
    from tqdm import tqdm

    from core.errors import ConfigError
    from core.evaluation import SUMMARY_COLUMNS, Scorer, format_table, tensor_to_images, write_results
    from core.io import write_image
    from core.loading import module_from_checkpoint, module_from_weights, pick_device
    from core.loggers import make_panel
    from core.metrics import calculate_psnr, calculate_ssim
    from diffpir.cli import wants_diffpir

    diffpir = wants_diffpir(args)
    own = EVAL_KEYS + (DIFFPIR_KEYS if diffpir else ())
    overrides = OmegaConf.create({k: v for k, v in args.items() if k not in own})
    check_override_keys(overrides, own)
    if diffpir:
        module, cfg = _diffpir_module(args, overrides)
        source = f"DiffPIR prior {args['prior_ckpt']}"
    elif args.get("ckpt"):
        module, cfg = module_from_checkpoint(args["ckpt"], overrides)
        source = f"checkpoint {args['ckpt']}"
    else:
        if not args.get("experiment"):
            raise ConfigError("weights=PATH needs experiment=NAME to know the task and data (e.g. irsde_rain100h)")
        module, cfg = module_from_weights(args["weights"], args["experiment"], _dotlist(overrides))
        source = f"release weights {args['weights']}"
    from hydra.utils import instantiate

    datamodule = instantiate(OmegaConf.create(OmegaConf.to_container(cfg.data, resolve=True)))
    datamodule.setup("test")
    loader = datamodule.test_dataloader()
    device = pick_device(args.get("device"))
    module.to(device)
    options = {k: args[k] for k in ("sampler", "steps", "sigma") if args.get(k) is not None}
    nfe = module.nfe(**options)
    dataset = getattr(datamodule, "name", cfg.data.get("_target_", "data").split(".")[-1])
    run_name = (f"diffpir_{Path(args['prior_ckpt']).stem}_{args['task']}" if diffpir else
                Path(args.get("ckpt") or args["weights"]).stem)
    out = Path(args.get("out") or Path("runs/eval") / f"{run_name}_{dataset}")
    y_channel, crop = bool(datamodule.metric_y_channel), int(datamodule.metric_crop_border)
    scorer = Scorer(y_channel=y_channel, crop_border=crop, device=str(device),
                    perceptual=args.get("perceptual", True))
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.get("precision") == "bf16")
    max_images, seed, panels = args.get("max_images"), int(args.get("seed", 0)), []
    print(f"model: {source} ({type(module).__name__}, {module.describe() if hasattr(module, 'describe') else ''})")
    seen = 0
    for batch in tqdm(loader, desc=f"evaluating {dataset}", disable=not args.get("progress", True)):
        if max_images is not None and seen >= max_images:
            break
        generator = torch.Generator(device=device).manual_seed(seed + int(batch["index"][0]))
        if hasattr(module, "prepare_batch"):  # methods that simulate their measurement from gt (DiffPIR)
            batch = module.prepare_batch(batch, generator)
        lq = batch["lq"].to(device)
        start = time.perf_counter()
        with autocast:
            restored = module.restore(lq, generator=generator, **module.restore_extras(batch, device),
                                      **options).float()
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds = (time.perf_counter() - start) / lq.shape[0]
        for name, lq_img, out_img, gt_img in zip(batch["name"], tensor_to_images(batch["lq"]),
                                                 tensor_to_images(restored), tensor_to_images(batch["gt"])):
            extra = {"seconds": seconds}
            if lq_img.shape == gt_img.shape:
                extra["psnr_input"] = calculate_psnr(lq_img, gt_img, crop, y_channel)
                extra["ssim_input"] = calculate_ssim(lq_img, gt_img, crop, y_channel)
            scorer.add(str(name), out_img, gt_img, **extra)
            if args.get("save_images", True):
                write_image(out / "images" / f"{name}.png", out_img)
            if len(panels) < int(args.get("panels", 4)):
                panels.append(make_panel(lq_img, out_img, gt_img))
            seen += 1
    summary = {**scorer.summary(), "dataset": dataset, "nfe": nfe, "model": source,
               "sampler": {**module.sampler_summary(**options)} if hasattr(module, "sampler_summary") else options,
               "convention": "y" if y_channel else "rgb", "crop_border": crop, "device": str(device)}
    summary["seconds_per_image"] = summary.pop("seconds", None)
    write_results(out, summary, scorer.rows)
    if panels:
        _write_preview(out / "preview.png", panels)
    if args.get("per_image", len(scorer.rows) <= 30):
        print(format_table(scorer.rows, [("name", "image", ""), ("psnr_input", "PSNR in", ".2f"),
                                         ("psnr", "PSNR out", ".2f"), ("ssim_input", "SSIM in", ".4f"),
                                         ("ssim", "SSIM out", ".4f")]))
        print()
    print(format_table([summary], SUMMARY_COLUMNS))
    if "psnr_input" in summary:
        print(f"degraded input: PSNR {summary['psnr_input']:.3f} dB, SSIM {summary['ssim_input']:.4f} "
              f"-> restored: PSNR {summary['psnr']:.3f} dB, SSIM {summary['ssim']:.4f}")
    print(f"wrote {out / 'metrics.json'}, per_image.csv, images/ and preview.png (LQ | restored | GT)")
    return summary


def _diffpir_module(args, overrides):
    """(DiffPIRRestorer, config with the data to evaluate on): the prior's training data unless data= is given."""
    from omegaconf import DictConfig, OmegaConf

    from core.cli import apply_overrides, group_choice
    from core.errors import ConfigError
    from core.loading import compose_config
    from diffpir.cli import restorer_from_args

    restorer, stored = restorer_from_args(args)
    if stored and isinstance(stored.get("data"), dict):
        base = OmegaConf.create(stored)
    elif group_choice(overrides, "data"):
        base = compose_config()
    else:
        raise ConfigError(f"prior_ckpt={args['prior_ckpt']} carries no data settings: choose the images to "
                          "evaluate on with data=celebahq|div2k|demo_faces|folders|... (and data.root=DIR)")
    cfg = apply_overrides(base, overrides)
    given = overrides.get("data") if isinstance(overrides.get("data"), (dict, DictConfig)) else {}
    if restorer.task.is_sr and "metric_crop_border" not in given:
        cfg.data.metric_crop_border = restorer.task.scale  # the official DiffPIR SR scores crop `scale` pixels
    return restorer, cfg


def _dotlist(cfg) -> list[str]:
    from omegaconf import OmegaConf

    flat: list[str] = []

    def walk(prefix, node):
        if isinstance(node, dict) and "_group_" in node:  # data=NAME with data.key=value
            flat.append(f"{prefix}={node.pop('_group_')}")
        if isinstance(node, dict):
            for key, value in node.items():
                walk(f"{prefix}.{key}" if prefix else key, value)
        else:
            flat.append(f"{prefix}={node}")

    walk("", OmegaConf.to_container(cfg))
    return flat


def _write_preview(path: Path, panels) -> None:
    import numpy as np

    from core.io import write_image

    width = max(p.shape[1] for p in panels)
    zoom = max(1, 384 // width)  # tiny images (the demo faces) are enlarged by pixel repetition to be seen
    panels = [p.repeat(zoom, axis=0).repeat(zoom, axis=1) for p in panels]
    width *= zoom
    rows = [np.pad(p, ((0, 4), (0, width - p.shape[1]), (0, 0)), constant_values=255) for p in panels]
    write_image(path, np.concatenate(rows, axis=0))


def main(argv: list[str]) -> dict:
    from core.errors import ConfigError

    args = dict(parse_overrides(argv).items())
    if args.get("restored") or args.get("gt"):
        if not (args.get("restored") and args.get("gt")):
            raise ConfigError("scoring existing images needs both restored=DIR and gt=DIR")
        return score_folders(args)
    if not (args.get("ckpt") or args.get("weights") or args.get("model") == "diffpir"):
        raise ConfigError("nothing to evaluate: pass ckpt=PATH (a suite checkpoint), weights=PATH experiment=NAME "
                          "(release weights) or restored=DIR gt=DIR (existing images)")
    return evaluate_model(args)


if __name__ == "__main__":
    with user_errors():
        main(sys.argv[1:])
