"""The web page in a real headless Chromium (Debian's chromium + chromium-driver, driven by Selenium): upload an
image, wait for the graph, check what is drawn, filter with the sliders by keyboard, save a screenshot."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from tests.serve.conftest import ASTRONAUT

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium (dev extra) is not installed")
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
    pytest.skip(
        "no chromium + chromedriver (Debian: apt-get install -y chromium chromium-driver; .ci/run installs them)",
        allow_module_level=True,
    )

from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402


@pytest.fixture(scope="module")
def downloads(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("downloads")


@pytest.fixture(scope="module")
def browser(downloads):
    options = webdriver.ChromeOptions()
    options.add_experimental_option(
        "prefs", {"download.default_directory": str(downloads), "download.prompt_for_download": False}
    )
    options.binary_location = CHROMIUM
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1280,1000",
    ):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    driver.execute_cdp_cmd("Page.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)})
    yield driver
    driver.quit()


def visible(driver, selector: str) -> list:
    return [
        item for item in driver.find_elements(By.CSS_SELECTOR, selector) if "hidden" not in item.get_attribute("class")
    ]


def wait_for_file(path: Path, timeout_s: float = 60) -> bytes:
    WebDriverWait(None, timeout_s).until(lambda _: path.is_file() and path.stat().st_size > 0)  # type: ignore[arg-type]
    return path.read_bytes()


@pytest.mark.slow
def test_page_upload_graph_sliders_and_screenshot(browser, server_url, tmp_path, downloads):
    browser.get(server_url + "/")
    WebDriverWait(browser, 30).until(lambda d: "resnet18" in d.find_element(By.ID, "model-line").text)
    browser.find_element(By.ID, "file-input").send_keys(str(ASTRONAUT))
    WebDriverWait(browser, 120).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#triplets tbody tr"))
    answer = browser.execute_script("return state.graph")
    relations = answer["relations"]
    assert len(relations) == 100  # the page asks for the top 100 and filters them itself

    rows = visible(browser, "#triplets tbody tr")
    assert len(rows) == 20  # the top-k slider starts at 20
    assert len(visible(browser, "#graph-view .edge")) == 20
    shown_objects = {index for r in relations[:20] for index in (r["subject"], r["object"])}
    assert len(visible(browser, "#image-view .box")) == len(shown_objects)
    assert len(visible(browser, "#graph-view .node")) == len(shown_objects)
    assert browser.find_element(By.CSS_SELECTOR, "#image-view image").get_attribute("href").startswith("blob:")
    # under the server's Content-Security-Policy (no inline style): the labels' sizes still apply (and the end of
    # this test finds no refusal in the console)
    label_size = "return document.querySelector('#image-view .box text').style.fontSize"
    assert browser.execute_script(label_size).endswith("px")
    scores = [float(row.find_element(By.CSS_SELECTOR, ".score").text) for row in rows]
    assert scores == sorted(scores, reverse=True)
    first = rows[0].find_elements(By.TAG_NAME, "td")
    top = relations[0]
    assert first[2].text == top["predicate_name"]
    assert first[1].text.endswith(answer["objects"][top["subject"]]["label_name"])

    # top-k by keyboard: five steps down
    top_k = browser.find_element(By.ID, "topk")
    top_k.send_keys(*[Keys.ARROW_LEFT] * 5)
    assert top_k.get_attribute("value") == "15"
    assert len(visible(browser, "#triplets tbody tr")) == 15 == len(visible(browser, "#graph-view .edge"))

    # the score threshold to its maximum: only relations scoring at least the threshold remain
    threshold = browser.find_element(By.ID, "threshold")
    threshold.send_keys(Keys.END)
    value = float(threshold.get_attribute("value"))
    expected = min(15, sum(r["score"] >= value for r in relations))
    assert 1 <= expected < 15
    assert len(visible(browser, "#triplets tbody tr")) == expected == len(visible(browser, "#graph-view .edge"))
    threshold.send_keys(Keys.HOME)
    assert len(visible(browser, "#triplets tbody tr")) == 15

    # focusing a table row (keyboard) highlights its relation in both views
    row = visible(browser, "#triplets tbody tr")[0]
    browser.execute_script("arguments[0].focus()", row)
    rank = row.get_attribute("data-relation")
    assert "hl" in browser.find_element(By.CSS_SELECTOR, f'#graph-view .edge[data-relation="{rank}"]').get_attribute(
        "class"
    )
    subject = relations[int(rank)]["subject"]
    assert "hl" in browser.find_element(By.CSS_SELECTOR, f'#image-view .box[data-object="{subject}"]').get_attribute(
        "class"
    )

    # downloads: the answer as JSON, the server's drawing as PNG
    browser.find_element(By.ID, "download-json").click()
    assert json.loads(wait_for_file(downloads / "astronaut_graph.json")) == answer
    browser.find_element(By.ID, "download-png").click()
    assert wait_for_file(downloads / "astronaut_graph.png").startswith(b"\x89PNG")

    screenshot = tmp_path / "serve_page.png"
    assert browser.save_screenshot(str(screenshot)) and screenshot.stat().st_size > 10_000
    if os.environ.get("EGTR_SCREENSHOT"):  # e.g. to look at the page by hand
        shutil.copy(screenshot, os.environ["EGTR_SCREENSHOT"])
    assert not [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]


def test_a_failed_upload_reports_the_error_and_clears_the_previous_graph(browser, server_url, tmp_path):
    browser.get(server_url + "/")
    browser.find_element(By.ID, "file-input").send_keys(str(ASTRONAUT))
    WebDriverWait(browser, 120).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#triplets tbody tr"))
    assert browser.find_element(By.ID, "download-json").is_enabled()
    fake = tmp_path / "photo.jpg"
    fake.write_text("not an image at all")
    browser.find_element(By.ID, "file-input").send_keys(str(fake))
    WebDriverWait(browser, 60).until(lambda d: d.find_element(By.ID, "status").text.startswith("Error"))
    assert "415" in browser.find_element(By.ID, "status").text
    # nothing of the astronaut's graph stays on screen, and nothing can be saved under photo.jpg's name
    drawn = "#triplets tbody tr, #image-view image, #image-view .box, #graph-view .node, #graph-view .edge"
    assert browser.find_elements(By.CSS_SELECTOR, drawn) == []
    for control in ("download-json", "download-png", "topk", "threshold"):
        assert not browser.find_element(By.ID, control).is_enabled(), control
    assert browser.execute_script("return state.graph") is None
