"""app.py called the way Gradio users call a page: gradio_client's Client(url).predict(handle_file(png),
api_name="/restore") with only an image restores it with the shipped demo denoiser, and view_api lists that one
endpoint. No browser needed."""

from __future__ import annotations

import numpy as np

from core.io import read_image, write_image
from webui.browser import free_port, start_app, stop_app


def test_restore_endpoint_with_an_image_alone(tmp_path):
    from gradio_client import Client, handle_file

    proc, url = start_app("demo_images=false", f"work_dir={tmp_path / 'work'}", port=free_port(),
                          log=tmp_path / "app.log")
    try:
        client = Client(url, verbose=False, download_files=str(tmp_path / "downloads"))
        api = client.view_api(print_info=False, return_format="dict")
        assert list(api["named_endpoints"]) == ["/restore"] and not api["unnamed_endpoints"]
        photo = tmp_path / "noisy.png"
        write_image(photo, np.random.default_rng(0).integers(0, 256, (24, 40, 3), dtype=np.uint8))
        files, numbers = client.predict(handle_file(str(photo)), api_name="/restore")
        assert len(files) == 1 and read_image(files[0]).shape == (24, 40, 3)
        row = numbers["images"][0]
        assert (row["width"], row["height"], row["nfe"]) == (40, 24, 2) and row["seconds"] > 0  # the fast default
        assert numbers["model"] == "IR-SDE denoising, σ 25 (demo)" and numbers["warnings"] == []
    finally:
        stop_app(proc)
    assert "share=True" not in (tmp_path / "app.log").read_text()  # Gradio's public-link hint is not printed
