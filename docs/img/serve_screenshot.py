"""Regenerate docs/img/serve.png: the `avis serve` page with the demo clip's result, taken by
headless Chromium (Debian's chromium + chromium-driver; the dev extra's selenium).

    python docs/img/serve_screenshot.py [--out docs/img/serve.png]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from selenium.webdriver.support.ui import WebDriverWait

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests"))  # script only: test helpers
from avis.inference.predictor import VideoPredictor  # noqa: E402
from avis.serve.app import create_app  # noqa: E402
from avis.serve.jobs import Limits, MemoryBudget  # noqa: E402
from serve_helpers import chromium_driver, running_server  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("serve.png"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as temp:
        app, manager = create_app(VideoPredictor.from_checkpoint(), Limits(), MemoryBudget(), temp)
        driver = chromium_driver()
        try:
            with running_server(app) as url:
                driver.set_window_size(1280, 1060)
                driver.get(url)
                WebDriverWait(driver, 30).until(lambda d: d.find_element("id", "demo").is_enabled())
                driver.find_element("id", "demo").click()
                WebDriverWait(driver, 600).until(lambda d: d.find_element("id", "result").is_displayed())
                video = driver.find_element("id", "overlay")
                WebDriverWait(driver, 60).until(lambda d: d.execute_script("return arguments[0].readyState", video) >= 2)
                rows = driver.find_elements("css selector", "#instances tbody tr")
                rows[-1].click()  # seek to the last instance's first sounding second
                WebDriverWait(driver, 30).until(lambda d: d.execute_script("return arguments[0].readyState", video) >= 2)
                WebDriverWait(driver, 30).until(
                    lambda d: d.execute_script("return document.getElementById('timeline').naturalWidth") > 0
                )
                driver.save_screenshot(str(args.out))
        finally:
            driver.quit()
            manager.close()
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
