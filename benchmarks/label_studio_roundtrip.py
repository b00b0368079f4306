"""The round trip against the real Label Studio: predictions -> Label Studio -> accepted annotations -> export ->
`egtr data import label-studio`, with the same boxes (<= 1 px) and relations at the end.

    python benchmarks/label_studio_roundtrip.py --label-studio /work/ls-venv/bin/label-studio \
        [--model M --size 96 --max-size 96 --images DIR] [--screenshot docs/images/label_studio_task.png]

Label Studio runs from its own virtual environment (its pinned dependencies would fight egtr's), as a subprocess on
127.0.0.1 and a free port, with a data folder of its own and a known user (LABEL_STUDIO_USERNAME / _PASSWORD), and is
stopped at the end. The steps, through its HTTP API (what a person's clicks do, see docs/own-data.md):

1. `egtr predict IMAGES --output-format label-studio` writes tasks.json and labeling_config.xml;
2. a project is created with that config, a local-files storage for the image folder, and shows predictions;
3. the tasks are imported with their predictions (optionally: a screenshot of the first one in headless Chromium);
4. each task's prediction is submitted as its annotation (what "Submit" does on a task that was not changed);
5. the project is exported as JSON and imported with `egtr data import label-studio`;
6. each imported object is found by its region id (`source_id`) in the predicted graph: box within 1 px, same class,
   same relations.

It is a script, not part of the test suite: starting Label Studio takes about 50 s on a 2-core machine (its database
migrations), and the whole run 1.5-3 minutes; tests/data/test_label_studio_live.py runs it when EGTR_LABEL_STUDIO
names the label-studio program (marked slow). Exit code 0: the round trip gave back the same graphs.
"""

from __future__ import annotations

import argparse
import http.cookiejar
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

USER, PASSWORD = "egtr@example.com", "egtr-roundtrip-1"
START_TIMEOUT = 300  # seconds for Label Studio to answer /health (its first start migrates a new database)
REQUEST_TIMEOUT = 60


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def label_studio(program: str, data_dir: Path, document_root: Path, log: Path) -> Iterator[str]:
    """A Label Studio server on loopback serving local files under `document_root`; yields its URL, then stops it."""
    port = free_port()
    environment = {
        **os.environ,
        "LABEL_STUDIO_BASE_DATA_DIR": str(data_dir),
        "LABEL_STUDIO_USERNAME": USER,
        "LABEL_STUDIO_PASSWORD": PASSWORD,
        "LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED": "true",
        "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT": str(document_root),
        "LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK": "true",
        "SENTRY_DSN": "",
        "PYTHONPATH": "",  # egtr's path must not leak into Label Studio's interpreter
    }
    command = [program, "start", "--no-browser", "--internal-host", "127.0.0.1", "--port", str(port)]
    command += ["--data-dir", str(data_dir)]
    with open(log, "wb") as output:
        process = subprocess.Popen(
            command, env=environment, stdout=output, stderr=subprocess.STDOUT, start_new_session=True
        )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(url, process, log)
        yield url
    finally:
        _stop(process)


def _wait_healthy(url: str, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"Label Studio exited with {process.returncode}; its log: {log}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=5) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(2)
    raise TimeoutError(f"Label Studio did not answer {url}/health within {START_TIMEOUT} s; its log: {log}")


def _stop(process: subprocess.Popen) -> None:
    """SIGTERM to Label Studio's process group (it starts workers), then SIGKILL after 20 s."""
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=20)


class Client:
    """Label Studio's HTTP API as the logged-in user (session cookie and CSRF token, as its web page does)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.cookies = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.cookies))

    def _csrf(self) -> str:
        return next((cookie.value or "" for cookie in self.cookies if cookie.name == "csrftoken"), "")

    def login(self) -> None:
        self.opener.open(f"{self.url}/user/login/", timeout=REQUEST_TIMEOUT).read()
        form = urllib.parse.urlencode({"csrfmiddlewaretoken": self._csrf(), "email": USER, "password": PASSWORD})
        request = urllib.request.Request(
            f"{self.url}/user/login/", data=form.encode(), headers={"Referer": f"{self.url}/user/login/"}
        )
        self.opener.open(request, timeout=REQUEST_TIMEOUT).read()
        if not any(cookie.name == "sessionid" for cookie in self.cookies):
            raise RuntimeError(f"could not log in to Label Studio at {self.url} as {USER}")

    def call(self, method: str, path: str, payload: Any = None) -> Any:
        headers = {"X-CSRFToken": self._csrf(), "Referer": f"{self.url}/", "Content-Type": "application/json"}
        body = None if payload is None else json.dumps(payload).encode()
        request = urllib.request.Request(f"{self.url}{path}", data=body, headers=headers, method=method)
        try:
            with self.opener.open(request, timeout=REQUEST_TIMEOUT) as response:
                text = response.read()
        except urllib.error.HTTPError as error:
            raise RuntimeError(f"{method} {path}: HTTP {error.code}: {error.read()[:500]!r}") from error
        return json.loads(text) if text else None


# ------------------------------------------------------------------ the steps
def default_photos(folder: Path) -> Path:
    """Four photos from the two packaged ones: one EXIF-rotated (orientation 6), one in a sub-folder with a space in
    its name, one wide PNG (a dataset needs an image in each split)."""
    from PIL import Image

    assets = ROOT / "src" / "egtr" / "assets"
    (folder / "sub folder").mkdir(parents=True)
    shutil.copy(assets / "astronaut.jpg", folder / "astronaut.jpg")
    shutil.copy(assets / "coffee.jpg", folder / "sub folder" / "coffee cup.jpg")
    with Image.open(assets / "coffee.jpg") as image:
        exif = Image.Exif()
        exif[0x0112] = 6  # shown rotated by 90 degrees: Label Studio's percentages are of the shown image
        image.transpose(Image.Transpose.ROTATE_90).save(folder / "rotated.jpg", exif=exif.tobytes())
    with Image.open(assets / "astronaut.jpg") as image:
        image.resize((300, 160)).save(folder / "wide.png")
    return folder


def egtr(*arguments: str) -> None:
    environment = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")])),
    }
    subprocess.run([sys.executable, "-m", "egtr.cli", *arguments], env=environment, check=True, timeout=600)


def create_project(client: Client, predictions: Path, photos: Path, version: str) -> int:
    config = (predictions / "labeling_config.xml").read_text()
    project = client.call("POST", "/api/projects", {"title": "egtr round trip", "label_config": config})
    storage = {"project": project["id"], "title": "photos", "path": str(photos.resolve()), "use_blob_urls": False}
    client.call("POST", "/api/storages/localfiles", storage)  # Label Studio serves only files under a storage
    client.call("POST", f"/api/projects/{project['id']}/import", json.loads((predictions / "tasks.json").read_text()))
    # Show the predictions as the starting point of each annotation ("Use predictions to prelabel tasks"); the
    # model version must exist among the imported predictions first.
    client.call("PATCH", f"/api/projects/{project['id']}", {"show_collab_predictions": True, "model_version": version})
    return int(project["id"])


def task_ids(client: Client, project: int) -> list[int]:
    page = client.call("GET", f"/api/tasks/?project={project}&page_size=1000")
    tasks = page["tasks"] if isinstance(page, dict) else page
    return sorted(int(task["id"]) for task in tasks)


def accept_predictions(client: Client, project: int) -> int:
    """Submit each task's prediction as its annotation, as a person's "Submit" on an unchanged pre-annotated task."""
    ids = task_ids(client, project)
    for task_id in ids:
        (prediction,) = client.call("GET", f"/api/predictions/?task={task_id}")
        annotation = {
            "result": prediction["result"],
            "was_cancelled": False,
            "ground_truth": False,
            "lead_time": 1.0,
            "parent_prediction": prediction["id"],
        }
        client.call("POST", f"/api/tasks/{task_id}/annotations/?project={project}", annotation)
    return len(ids)


def export(client: Client, project: int, path: Path) -> int:
    tasks = client.call("GET", f"/api/projects/{project}/export?exportType=JSON&download_all_tasks=true")
    path.write_text(json.dumps(tasks, indent=1))
    return len(tasks)


def compare(predictions: Path, dataset: Path) -> dict[str, Any]:
    """Every imported object against the predicted object of its region id: largest box difference (px), classes
    and relations that differ, images missing."""
    from egtr.inference.scene_graph import SceneGraph

    largest, differences, seen = 0.0, [], set()
    relations_file = json.loads((dataset / "rel.json").read_text())
    predicates = relations_file["rel_categories"]
    for split in ("train", "val", "test"):
        coco = json.loads((dataset / f"{split}.json").read_text())
        classes = {category["id"]: category["name"] for category in coco["categories"]}
        for image in coco["images"]:
            graph = SceneGraph.from_json(predictions / "graphs" / f"{Path(image['file_name']).stem}.json")
            seen.add(image["file_name"])
            objects = [a for a in coco["annotations"] if a["image_id"] == image["id"]]
            index = [int(a["source_id"].removeprefix("o")) for a in objects]  # region o3 = the graph's object 3
            for annotation, position in zip(objects, index, strict=True):
                x1, y1, x2, y2 = graph.objects[position].box
                box = annotation["bbox"]
                largest = max(largest, *(abs(a - b) for a, b in zip(box, (x1, y1, x2 - x1, y2 - y1), strict=True)))
                if classes[annotation["category_id"]] != graph.objects[position].label_name:
                    differences.append(f"{image['file_name']}: class of region o{position}")
            imported = {(index[s], predicates[p], index[o]) for s, o, p in relations_file[split][str(image["id"])]}
            if imported != {(r.subject, r.predicate_name, r.object) for r in graph.relations}:
                differences.append(f"{image['file_name']}: relations {sorted(imported)}")
    return {"images": sorted(seen), "largest_box_difference_px": largest, "differences": differences}


def screenshot(url: str, project: int, task_id: int, out: Path) -> None:
    """The first task in Label Studio's labelling page, its predicted regions and relations shown (headless Chromium:
    log in, open the task)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(argument)
    options.add_argument("--window-size=1400,900")
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver") or "/usr/bin/chromedriver"), options=options)
    try:
        driver.set_page_load_timeout(120)
        driver.get(f"{url}/user/login/")
        driver.find_element(By.NAME, "email").send_keys(USER)
        driver.find_element(By.NAME, "password").send_keys(PASSWORD)
        driver.find_element(By.CSS_SELECTOR, "button[type=submit], input[type=submit]").click()
        WebDriverWait(driver, 60).until(lambda d: "/user/login" not in d.current_url)
        driver.get(f"{url}/projects/{project}/data?task={task_id}")
        # The labelling canvas (Konva) and the image are in once the page has drawn the regions.
        WebDriverWait(driver, 120).until(lambda d: d.find_elements(By.CSS_SELECTOR, "canvas"))
        time.sleep(8)  # the image decodes and the regions list fills in after the canvas appears
        out.parent.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(out))
    finally:
        driver.quit()


def run(program: str, work: Path, model: str, images: Path | None, sizes: list[str], shot: Path | None) -> dict:
    photos = images.resolve() if images else default_photos(work / "photos")
    predictions = work / "predictions"
    # Label Studio serves local files under its document root, from a storage in a folder below it: the references
    # are paths from the parent of the image folder (egtr's default for local files).
    egtr("predict", str(photos), "--recursive", "--model", model, "--out", str(predictions), "--output-format",
         "label-studio", "--device", "cpu", "--no-progress", "--top-k", "8", *sizes)  # fmt: skip
    version = json.loads((predictions / "tasks.json").read_text())[0]["predictions"][0]["model_version"]
    timings: dict[str, float] = {}
    started = time.perf_counter()
    with label_studio(program, work / "label-studio", photos.parent, work / "label-studio.log") as url:
        timings["start"] = round(time.perf_counter() - started, 1)
        client = Client(url)
        client.login()
        project = create_project(client, predictions, photos, version)
        if shot is not None:
            screenshot(url, project, task_ids(client, project)[0], shot)
        accepted = accept_predictions(client, project)
        exported = export(client, project, work / "export.json")
        timings["label_studio_total"] = round(time.perf_counter() - started, 1)
    egtr("data", "import", "label-studio", str(work / "export.json"), "--images", str(photos), "--out",
         str(work / "data"), "--val-fraction", "0.25", "--test-fraction", "0.25")  # fmt: skip
    result = compare(predictions, work / "data")
    return {"accepted": accepted, "exported": exported, "seconds": timings, **result}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--label-studio", default=shutil.which("label-studio") or "label-studio", help="its program")
    parser.add_argument("--model", default=str(ROOT / "tests/fixtures/reference/artifact"))
    parser.add_argument("--images", type=Path, default=None, help="image folder (default: the packaged photos)")
    parser.add_argument("--size", default="96", help="--size of egtr predict")
    parser.add_argument("--max-size", default="128", help="--max-size of egtr predict")
    parser.add_argument("--screenshot", type=Path, default=None, help="PNG of the first pre-annotated task")
    parser.add_argument("--keep", type=Path, default=None, help="work here and keep everything (default: temporary)")
    parser.add_argument("--summary", type=Path, default=None, help="also write the result as JSON here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="egtr-ls-") as temporary:
        work = args.keep or Path(temporary)
        work.mkdir(parents=True, exist_ok=True)
        sizes = ["--size", args.size, "--max-size", args.max_size]
        result = run(args.label_studio, work, args.model, args.images, sizes, args.screenshot)
    print(json.dumps(result, indent=2))
    if args.summary:
        args.summary.write_text(json.dumps(result, indent=2) + "\n")
    same = not result["differences"] and result["largest_box_difference_px"] <= 1 and result["exported"] >= 4
    print("round trip: the same boxes and relations came back" if same else "round trip: DIFFERENT", file=sys.stderr)
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
