"""Screenshot of the web page after restoring a demo image: starts app.py, drives headless Chromium (Debian's
chromium + chromium-driver, through selenium), picks a demo image, restores it and saves the page.

  python scripts/app_screenshot.py                       # -> assets/app_screenshot.png
  python scripts/app_screenshot.py --demo "face090 — 32x32" --out /tmp/faces.png
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from webui.browser import REPO, SLIDER_SHOWN, chrome, free_port, start_app, stop_app, wait_for  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--demo", default="chelsea — noisy", help="start of the demo image's label")
    parser.add_argument("--out", type=Path, default=REPO / "assets" / "app_screenshot.png")
    parser.add_argument("--size", default="1400x1080", help="browser window, WIDTHxHEIGHT")
    parser.add_argument("app_args", nargs="*", help="app.py overrides, e.g. device=cpu")
    args = parser.parse_args()
    from selenium.webdriver.common.by import By

    with tempfile.TemporaryDirectory(prefix="app-screenshot-") as tmp:
        proc, url = start_app(f"work_dir={tmp}/work", *args.app_args, port=free_port(), log=Path(tmp) / "app.log")
        driver = chrome(size=tuple(int(v) for v in args.size.split("x")))
        try:
            driver.get(url)
            wait_for(lambda: driver.find_elements(By.CSS_SELECTOR, "#demo input"), what="the page")[0].click()
            options = wait_for(lambda: driver.find_elements(By.CSS_SELECTOR, "#demo [data-testid=dropdown-option]"))
            next(o for o in options if o.get_attribute("aria-label").startswith(args.demo)).click()
            wait_for(lambda: driver.find_elements(By.CSS_SELECTOR, "#gt a"), what="the demo's ground truth")
            wait_for(lambda: [b for b in driver.find_elements(By.ID, "restore") if b.is_enabled()],
                     what="the model's options")
            driver.find_element(By.ID, "restore").click()
            wait_for(lambda: driver.find_elements(By.CSS_SELECTOR, "#downloads a"), timeout=600, what="the result")
            wait_for(lambda: driver.execute_script(SLIDER_SHOWN), what="the before / after images")
            driver.execute_script("window.scrollTo(0, 0)")
            time.sleep(1.5)  # the page fades its outputs back in after a run
            args.out.parent.mkdir(parents=True, exist_ok=True)
            driver.save_screenshot(str(args.out))
            print(f"wrote {args.out}")
        finally:
            driver.quit()
            stop_app(proc)


if __name__ == "__main__":
    main()
