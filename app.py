"""A local web page that restores images with any model (config: configs/app.yaml).

  python app.py                                     # the shipped demo models on http://127.0.0.1:7860
  python app.py ckpt=runs/.../checkpoints/last.ckpt port=8080
  python app.py weights=lastest_EMA.pth experiment=irsde_rain100h
  python app.py model=diffpir prior_ckpt=ffhq_10m.pt task=inpainting
  python app.py host=0.0.0.0 max_pixels=4000000 device=cuda precision=bf16

Upload images (or pick a demo image), choose the model and its options, and get the restored PNG: the same
pixels as `python restore.py ... input=<that file> seed=<the page's seed>`. Restorations queue (one at a time);
Stop cancels one. Scripts call the same restoration through the page's one API endpoint, /restore (webui/api.py).
The page answers within seconds: models load when first used. Nothing is downloaded: Gradio's analytics are off
and there are no share links.
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
    _check_port(str(cfg.host), int(cfg.port))  # before anything slow: a taken port is said within a second
    from webui.catalogue import load_catalogue
    from webui.demo_images import write_demo_images
    from webui.page import CSS, build_page, theme, work_dir
    from webui.run import Settings

    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    logging.getLogger("webui").setLevel(logging.INFO)  # the model list's skip lines, loads and timings
    device = str(cfg.device)  # auto | cpu | cuda:N, resolved when a model first loads
    models = load_catalogue(cfg, device, str(cfg.precision))  # listed models load when first used
    out = work_dir(cfg.work_dir)
    settings = Settings(device, out / "results", str(cfg.precision), cfg.max_pixels, cfg.max_pixels_tiled,
                        _convention(cfg))
    demos = write_demo_images(out / "demo") if cfg.demo_images else []
    page = build_page(models, settings, demos, seed=int(cfg.seed))
    page.queue(default_concurrency_limit=1)  # one worker: users wait their turn instead of sharing the device
    print(f"models: {', '.join(models)}")
    try:  # quiet: no "To create a public link, set share=True" (there are none); our own line says the address
        page.launch(server_name=str(cfg.host), server_port=int(cfg.port), share=False, theme=theme(), css=CSS,
                    max_file_size=cfg.max_file_size, allowed_paths=[str(out)], ssr_mode=False, mcp_server=False,
                    footer_links=["api"], show_error=True, quiet=True, prevent_thread_lock=True)
    except OSError as err:
        raise _port_taken(cfg.host, cfg.port) from err
    print(f"serving on http://{cfg.host}:{cfg.port} (Ctrl+C stops)", flush=True)
    page.block_thread()


def _check_port(host: str, port: int) -> None:
    """Bind host:port as the server will (SO_REUSEADDR, as uvicorn), then let it go."""
    import socket

    try:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
    except OSError as err:
        raise _port_taken(host, port) from err


def _port_taken(host, port):
    from core.errors import ConfigError

    return ConfigError(f"cannot serve on {host}:{port}: the port is taken (or the host is not this machine); "
                       "choose another with port=N")


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
