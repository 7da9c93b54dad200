"""app.py in a real browser: headless Chromium uploads a demo photo, restores it with the shipped IR-SDE demo
model at 3 steps, downloads the PNG, and sees a bad upload's message; the PNG equals restore.py's output."""

from __future__ import annotations

import numpy as np
import pytest

from webui.browser import INSTALL, REPO, SLIDER_SHOWN, browser_paths, chrome, free_port, start_app, stop_app, wait_for

pytestmark = pytest.mark.skipif(browser_paths() is None, reason=f"needs a browser: {INSTALL}")

MODEL = REPO / "assets" / "irsde_demo_denoise.ckpt"
STEPS = "3"


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    """The app serving the shipped models (no demo images: the test uploads its own), and a browser."""
    root = tmp_path_factory.mktemp("app")
    proc, url = start_app("demo_images=false", f"work_dir={root / 'work'}", port=free_port(), log=root / "app.log")
    downloads = root / "downloads"
    downloads.mkdir()
    driver = chrome(downloads)
    try:
        yield driver, url, downloads
    finally:
        driver.quit()
        stop_app(proc)


def _noisy_photo(folder):
    """The first held-out demo photo with the demo's noise (what the shipped model was trained to remove)."""
    from core.io import write_image
    from data.demo import build_demo_split

    item = build_demo_split("noise", "test", max_images=1)[0]
    path = folder / f"{item['name']}.png"
    write_image(path, item["lq"])
    return path


def test_restore_in_browser_equals_restore_py(page, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    import restore
    from core.io import read_image

    driver, url, downloads = page
    photo = _noisy_photo(tmp_path)
    driver.get(url)
    upload = wait_for(lambda: driver.find_elements(By.CSS_SELECTOR, "#images input[type=file]"), what="upload")
    upload[0].send_keys(str(photo))
    wait_for(lambda: photo.stem in driver.find_element(By.ID, "images").text, what="the uploaded file's name")
    steps = driver.find_element(By.CSS_SELECTOR, "#steps input")
    steps.send_keys(Keys.CONTROL, "a")
    steps.send_keys(STEPS, Keys.TAB)
    driver.find_element(By.ID, "restore").click()

    link = wait_for(lambda: driver.find_elements(By.CSS_SELECTOR, "#downloads a"), timeout=90, what="the result")[0]
    wait_for(lambda: driver.execute_script(SLIDER_SHOWN), what="the before / after images")
    assert f"{STEPS} NFEs" in driver.find_element(By.ID, "info").text
    link.click()
    downloaded = wait_for(lambda: [p for p in downloads.glob("*.png")], what="the download")[0]
    restored = read_image(downloaded)

    reference = restore.main([f"ckpt={MODEL}", f"input={photo}", f"output={tmp_path / 'cli'}", f"steps={STEPS}",
                              "seed=0", "progress=false"])[0]
    assert np.array_equal(restored, read_image(reference))  # the same pixels as restore.py's PNG
    assert not np.array_equal(restored, read_image(photo))

    bad = tmp_path / "notes.png"
    bad.write_text("these are notes, not pixels\n")
    driver.get(url)
    wait_for(lambda: driver.find_elements(By.CSS_SELECTOR, "#images input[type=file]"), what="upload")[0] \
        .send_keys(str(bad))
    wait_for(lambda: bad.stem in driver.find_element(By.ID, "images").text, what="the bad file's name")
    driver.find_element(By.ID, "restore").click()
    errors = wait_for(lambda: [e.text for e in driver.find_elements(By.CSS_SELECTOR, ".toast-body.error")
                               if "not an image" in e.text], what="the bad upload's message")
    assert "notes.png is not an image" in errors[0] and "Traceback" not in errors[0]
