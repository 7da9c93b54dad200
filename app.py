"""A local web page that restores images with any model (config: configs/app.yaml).

  python app.py                                     # the shipped demo models on http://127.0.0.1:7860
  python app.py ckpt=runs/.../checkpoints/last.ckpt port=8080
  python app.py weights=lastest_EMA.pth experiment=irsde_rain100h
  python app.py model=diffpir prior_ckpt=ffhq_10m.pt task=inpainting
  python app.py host=0.0.0.0 max_pixels=4000000 device=cuda precision=bf16

Upload images (or pick a demo image), choose the model and its options, and get the restored PNG: the same
pixels as `python restore.py ... input=<that file> seed=<the page's seed>`. Restorations queue (one at a time);
Stop cancels one. Nothing is downloaded: Gradio's analytics are off and there are no share links.
"""

from __future__ import annotations

import logging
import os

import hydra
from omegaconf import DictConfig

from core.cli import CONFIG_DIR, caught, run_hydra, user_errors

os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"  # before anything imports gradio
RESULT: list = []


def serve(cfg: DictConfig) -> None:
    from core.errors import ConfigError
    from core.loading import pick_device
    from webui.catalogue import load_catalogue
    from webui.demo_images import write_demo_images
    from webui.page import CSS, build_page, theme, work_dir
    from webui.run import Settings

    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    logging.getLogger("webui").setLevel(logging.INFO)  # the model list's skip lines
    device = pick_device(cfg.device)
    models = load_catalogue(cfg, device, str(cfg.precision))
    out = work_dir(cfg.work_dir)
    settings = Settings(device, out / "results", str(cfg.precision), cfg.max_pixels, cfg.max_pixels_tiled,
                        _convention(cfg))
    demos = write_demo_images(out / "demo") if cfg.demo_images else []
    page = build_page(models, settings, demos, seed=int(cfg.seed))
    page.queue(default_concurrency_limit=1)  # one worker: users wait their turn instead of sharing the device
    print(f"models: {', '.join(models)}")
    try:
        page.launch(server_name=str(cfg.host), server_port=int(cfg.port), share=False, theme=theme(), css=CSS,
                    max_file_size=cfg.max_file_size, allowed_paths=[str(out)], ssr_mode=False, mcp_server=False,
                    footer_links=[], show_error=True)
    except OSError as err:
        raise ConfigError(f"cannot serve on {cfg.host}:{cfg.port}: the port is taken (or the host is not this "
                          "machine); choose another with port=N") from err


def _convention(cfg: DictConfig) -> dict:
    from core.errors import ConfigError

    if cfg.convention not in (None, "y", "rgb"):
        raise ConfigError(f"convention={cfg.convention}: use convention=y or convention=rgb")
    return {**({"y_channel": cfg.convention == "y"} if cfg.convention else {}),
            **({"crop_border": int(cfg.crop_border)} if cfg.crop_border is not None else {})}


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="app")
def _hydra_main(cfg: DictConfig) -> None:
    RESULT.append(caught(serve, cfg))


def main(argv: list[str] | None = None) -> None:
    """Run with `argv` as the command line (default sys.argv); serves until interrupted."""
    return run_hydra(_hydra_main, "app", argv, RESULT)


if __name__ == "__main__":
    with user_errors():
        main()
