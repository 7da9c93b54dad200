"""app.py in a real browser: headless Chromium uploads a demo photo, restores it with the shipped IR-SDE demo
model at the page's default (the fast sampler), downloads the PNG (restore.py's pixels); a bad upload's message
still stands 15 s later, while DiffPIR shows only the chosen task's controls, with no label cut off."""

from __future__ import annotations

import time

import numpy as np
import pytest

from webui.browser import INSTALL, REPO, SLIDER_SHOWN, browser_paths, chrome, free_port, start_app, stop_app, wait_for

pytestmark = pytest.mark.skipif(browser_paths() is None, reason=f"needs a browser: {INSTALL}")

MODEL = REPO / "assets" / "irsde_demo_denoise.ckpt"
FAST = ["sampler=mr_ode", "order=1", "steps=2"]  # README "Which sampler when": the page's default for this model
# inputs whose text is wider than their box (a dropdown's choice cut off)
CUT_OFF = ("return [...document.querySelectorAll('input')].filter(i => i.offsetParent && "
           "i.scrollWidth > i.clientWidth + 1).map(i => i.value);")


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


def _text(driver, elem_id: str) -> str:
    """The element's text, "" while the page has not drawn it (read in one script: Gradio redraws elements, so a
    handle found first may be stale when read)."""
    return driver.execute_script("const e = document.getElementById(arguments[0]); return e ? e.innerText : ''",
                                 elem_id)


def _shown(driver, elem_id: str) -> bool:
    return driver.execute_script("const e = document.getElementById(arguments[0]);"
                                 "return !!e && e.getClientRects().length > 0", elem_id)


def _upload(driver, path) -> None:
    from selenium.webdriver.common.by import By

    wait_for(lambda: driver.find_elements(By.CSS_SELECTOR, "#images input[type=file]"), what="upload")[0] \
        .send_keys(str(path))
    wait_for(lambda: path.stem in _text(driver, "images"), what="the uploaded file's name")


def test_restore_in_browser_equals_restore_py(page, tmp_path):
    from selenium.webdriver.common.by import By

    import restore
    from core.io import read_image

    driver, url, downloads = page
    photo = _noisy_photo(tmp_path)
    driver.get(url)
    # the fast sampler is the default, and "the model's own" says what it is
    wait_for(lambda: [e for e in driver.find_elements(By.CSS_SELECTOR, "#sampler input")
                      if "fast" in e.get_attribute("value")], what="the model's options")
    assert driver.find_element(By.CSS_SELECTOR, "#steps input").get_attribute("value") == "2"
    assert "denoise_ode, 22 steps" in _text(driver, "own")
    _upload(driver, photo)
    wait_for(lambda: "Expected time: about" in _text(driver, "estimate"), what="the expected time")
    driver.find_element(By.ID, "restore").click()

    link = wait_for(lambda: driver.find_elements(By.CSS_SELECTOR, "#downloads a"), timeout=90, what="the result")[0]
    wait_for(lambda: driver.execute_script(SLIDER_SHOWN), what="the before / after images")
    assert "2 NFEs" in _text(driver, "info")
    link.click()
    downloaded = wait_for(lambda: [p for p in downloads.glob("*.png")], what="the download")[0]
    restored = read_image(downloaded)

    reference = restore.main([f"ckpt={MODEL}", f"input={photo}", f"output={tmp_path / 'cli'}", *FAST, "seed=0",
                              "progress=false"])[0]
    assert np.array_equal(restored, read_image(reference))  # the same pixels as restore.py's PNG
    assert not np.array_equal(restored, read_image(photo))


def test_bad_upload_message_stays_while_diffpir_shows_its_tasks_controls(page, tmp_path):
    from selenium.webdriver.common.by import By

    driver, url, _ = page
    bad = tmp_path / "notes.png"
    bad.write_text("these are notes, not pixels\n")
    driver.get(url)
    wait_for(lambda: [b for b in driver.find_elements(By.ID, "restore") if b.is_enabled()],
             what="Restore, on once the model loaded")
    _upload(driver, bad)
    wait_for(lambda: "notes.png is not an image" in _text(driver, "messages"), what="the upload's message")
    driver.find_element(By.ID, "restore").click()
    wait_for(lambda: "Error: notes.png is not an image" in _text(driver, "messages"), what="the run's message")
    shown_at = time.monotonic()

    driver.find_element(By.CSS_SELECTOR, "#model input").click()
    wait_for(lambda: [o for o in driver.find_elements(By.CSS_SELECTOR, "#model [data-testid=dropdown-option]")
                      if "DiffPIR" in o.text], what="the model list")[0].click()
    every = ("scale", "mask_source", "mask_preview", "kernel", "sampler", "tile")
    for task, controls in (("inpainting", {"mask_source", "mask_preview"}), ("super-resolution", {"scale"}),
                           ("Gaussian", {"kernel"})):
        wait_for(lambda t=task: driver.find_elements(By.XPATH, f"//*[@id='task']//label[contains(., '{t}')]"),
                 what="the DiffPIR tasks")[0].click()
        wait_for(lambda c=controls: {i for i in every if _shown(driver, i)} == c, what=f"the {task} controls")
    assert driver.execute_script(CUT_OFF) == []  # the long model name and choices are whole

    time.sleep(max(0.0, 15 - (time.monotonic() - shown_at)))
    message = _text(driver, "messages")
    assert "notes.png is not an image" in message and "Traceback" not in message  # still there, 15 s on
    assert driver.find_element(By.ID, "restore").is_enabled()
