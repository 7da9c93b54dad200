"""Train a restoration model: python train.py experiment=irsde_rain100h data.root=/datasets/Rain100H [key=value ...]

The run directory (runs/<name>/<date_time>/) gets the resolved config (.hydra/config.yaml), checkpoints/
(last.ckpt and the best by validation PSNR, each holding the config too) and the logger's files.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from core.cli import CONFIG_DIR, caught, run_hydra, user_errors

log = logging.getLogger("train")


def train(cfg: DictConfig) -> dict:
    import lightning as L

    from core.callbacks import LineProgressBar
    from core.checkpoint import AtomicCheckpointIO, resolve_ckpt_path
    from core.cli import trainer_arguments
    from core.loading import instantiate
    from core.progress import is_terminal
    from core.quiet import lightning_lines_once
    from core.training import explain_out_of_memory

    trainer_args = trainer_arguments(cfg.trainer)  # a misspelt trainer.* key: one line before any work
    lightning_lines_once()
    L.seed_everything(cfg.seed, workers=True)
    run_config = OmegaConf.to_container(cfg, resolve=True)
    out_dir = Path(cfg.paths.output_dir)
    datamodule = instantiate(cfg.data)
    module = instantiate(cfg.model)
    module.run_config = run_config
    logger = instantiate(cfg.logger) if cfg.logger and cfg.logger.get("_target_") else False
    if logger:
        logger.log_hyperparams(run_config)
    callbacks = [instantiate(c) for c in (cfg.callbacks or {}).values() if c]
    if trainer_args.get("enable_progress_bar", True) and not is_terminal(sys.stdout):
        callbacks.append(LineProgressBar())  # a log file or a pipe: lines, not carriage-return redraws
    trainer = L.Trainer(**trainer_args, logger=logger, callbacks=callbacks, plugins=[AtomicCheckpointIO()])
    with explain_out_of_memory(cfg.data, trainer):
        ckpt_path = resolve_ckpt_path(cfg.ckpt_path, cfg.paths.log_dir, cfg.name, run_dir=out_dir)
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
    results = {"run_dir": str(out_dir), "metrics": {k: float(v) for k, v in trainer.callback_metrics.items()}}
    if cfg.test_after_fit:  # the test split through the one evaluation loop (RestorationModule.test_step)
        (scores,) = trainer.test(module, datamodule=datamodule)
        results["test"] = {k: float(v) for k, v in scores.items()}
    if trainer.is_global_zero:
        ckpt_dir = out_dir / "checkpoints"
        log.info("checkpoints in %s; evaluate with: python evaluate.py ckpt=%s", ckpt_dir, ckpt_dir / "last.ckpt")
    return results


RESULT: list[dict] = []


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="train")
def _hydra_main(cfg: DictConfig) -> None:
    RESULT.append(caught(train, cfg))


def main(argv: list[str] | None = None) -> dict:
    """Run with `argv` as the command line (default sys.argv); a misspelt key names the valid ones."""
    return run_hydra(_hydra_main, "train", argv, RESULT)


if __name__ == "__main__":
    with user_errors():
        main()
