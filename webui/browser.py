"""The page in a real browser: start app.py on a free port and drive Debian's headless Chromium through
selenium. Used by tests/integration/test_app_browser.py and scripts/app_screenshot.py.

selenium is given the driver's path, so its Selenium Manager (which downloads browsers and drivers) never runs.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CHROMIUM = ("chromium", "chromium-browser", "google-chrome")
INSTALL = "apt-get install chromium chromium-driver (and pip install selenium)"
# a script for driver.execute_script: both images of the before / after slider are loaded and drawn
SLIDER_SHOWN = ("const imgs = [...document.querySelectorAll('#result img')];"
                "return imgs.length == 2 && imgs.every(i => i.complete && i.naturalWidth > 0 && i.height > 0);")


def browser_paths() -> tuple[str, str] | None:
    """(browser, chromedriver) found on this machine, or None."""
    browser = next((shutil.which(name) for name in CHROMIUM if shutil.which(name)), None)
    driver = shutil.which("chromedriver")
    try:
        import selenium  # noqa: F401
    except ImportError:
        return None
    return (browser, driver) if browser and driver else None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_app(*args: str, port: int, log: Path, timeout: float = 120) -> tuple[subprocess.Popen, str]:
    """app.py with `args` on 127.0.0.1:port, its output in `log`; returns (process, url) once the page answers."""
    env = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1", "WANDB_SILENT": "true", "GRADIO_ANALYTICS_ENABLED": "False",
           "PYTHONPATH": str(REPO)}
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, str(REPO / "app.py"), f"port={port}", *args], cwd=REPO, env=env,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"app.py exited with {proc.returncode}:\n{Path(log).read_text()}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return proc, url
        except OSError:
            time.sleep(0.5)
    stop_app(proc)
    raise TimeoutError(f"app.py did not answer on {url} within {timeout:.0f} s:\n{Path(log).read_text()}")


def stop_app(proc: subprocess.Popen) -> None:
    """End app.py (its own process group: nothing else is touched)."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def chrome(downloads: Path | None = None, size: tuple[int, int] = (1400, 1000)):
    """A headless Chromium; files it downloads go to `downloads`."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    paths = browser_paths()
    if paths is None:
        raise RuntimeError(f"no Chromium/chromedriver/selenium here: {INSTALL}")
    options = webdriver.ChromeOptions()
    options.binary_location = paths[0]
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                f"--window-size={size[0]},{size[1]}"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=paths[1]), options=options)
    if downloads is not None:
        driver.execute_cdp_cmd("Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)})
    return driver


def wait_for(condition, timeout: float = 60, every: float = 0.25, what: str = "the page"):
    """condition()'s first truthy value, polled until `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(every)
    raise TimeoutError(f"waited {timeout:.0f} s for {what}")
