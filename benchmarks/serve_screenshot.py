"""The screenshot of the `egtr serve` page in docs/images/serve_page.png: a server on a loopback port, headless
Chromium (Debian's chromium + chromium-driver, through Selenium) uploads a photo and waits for the graph.

    python benchmarks/serve_screenshot.py --model /work/demo_model/model --out docs/images/serve_page.png
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from selenium import webdriver  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

from egtr import Predictor  # noqa: E402
from egtr.serve import ServeSettings, create_app, running_server  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=str(ROOT / "tests/fixtures/reference/artifact"))
    parser.add_argument("--image", default=str(ROOT / "src/egtr/assets/astronaut.jpg"))
    parser.add_argument("--size", type=int, default=None, help="shorter side (default: the model's)")
    parser.add_argument("--max-size", type=int, default=None)
    parser.add_argument("--width", type=int, default=1280, help="window width in CSS pixels (390: a phone)")
    parser.add_argument("--height", type=int, default=1000)
    parser.add_argument("--out", default="serve_page.png")
    args = parser.parse_args()

    predictor = Predictor.from_pretrained(args.model, size=args.size, max_size=args.max_size, device="cpu")
    with running_server(create_app(predictor, ServeSettings(model_name=Path(args.model).name))) as url:
        options = webdriver.ChromeOptions()
        options.binary_location = "/usr/bin/chromium"
        for argument in (
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            f"--window-size={args.width},{args.height}",
        ):
            options.add_argument(argument)
        driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
        try:
            driver.get(url + "/")
            driver.find_element(By.ID, "file-input").send_keys(str(Path(args.image).resolve()))
            WebDriverWait(driver, 300).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#triplets tbody tr"))
            time.sleep(0.5)  # let the layout settle
            driver.save_screenshot(args.out)
            print(f"{driver.find_element(By.ID, 'status').text} -> {args.out}")
        finally:
            driver.quit()
    return 0


if __name__ == "__main__":
    sys.exit(main())
