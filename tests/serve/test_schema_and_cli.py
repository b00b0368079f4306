"""The published JSON Schema fits `egtr predict`'s files and the server's answers; `egtr serve` as a command."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from tests.serve.conftest import ASTRONAUT, COFFEE

from egtr.inference.files import predict_files
from egtr.schemas import scene_graph_schema
from egtr.serve.settings import is_loopback

jsonschema = pytest.importorskip("jsonschema", reason="jsonschema (dev extra) is not installed")
ROOT = Path(__file__).resolve().parents[2]


def test_schema_is_valid_and_the_docs_copy_is_the_package_file():
    schema = scene_graph_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    assert json.loads((ROOT / "docs" / "scene-graph-v1.schema.json").read_text()) == schema


def test_predict_files_and_server_answers_validate(predictor, client, tmp_path):
    validator = jsonschema.Draft202012Validator(scene_graph_schema())
    report = predict_files(predictor, [ASTRONAUT], tmp_path, draw_formats=(), progress=False)
    written = json.loads(report.outputs[str(ASTRONAUT)][0].read_text())
    validator.validate(written)
    for params in ({}, {"graph_constraint": "false", "object_threshold": 0.1}):
        served = client.post("/v1/scene-graphs", content=COFFEE.read_bytes(), params=params).json()
        validator.validate(served)
    # the schema is strict enough to catch a broken answer
    broken = dict(written, relations=[{"subject": 0}])
    assert not validator.is_valid(broken)
    assert not validator.is_valid(dict(written, extra=1))


def test_loopback_detection():
    assert all(map(is_loopback, ("127.0.0.1", "127.1.2.3", "::1", "[::1]", "localhost")))
    assert not any(map(is_loopback, ("0.0.0.0", "::", "192.168.1.5", "example.org", "")))


def egtr_command(*arguments: str, **options) -> subprocess.Popen:
    environment = dict(os.environ, PYTHONPATH=str(ROOT / "src"), PYTHONUNBUFFERED="1")
    environment.pop("EGTR_API_KEY", None)
    return subprocess.Popen(
        [sys.executable, "-m", "egtr.cli", *arguments], env=environment, text=True, stderr=subprocess.PIPE, **options
    )


def test_serve_refuses_a_public_address_without_a_key(reference_dir, capsys, monkeypatch):
    from egtr.cli import main

    monkeypatch.delenv("EGTR_API_KEY", raising=False)
    assert main(["serve", "--model", str(reference_dir / "artifact"), "--host", "0.0.0.0"]) == 2
    errors = capsys.readouterr().err
    assert "error: --host 0.0.0.0 accepts connections from other machines" in errors and "--insecure" in errors
    assert main(["serve", "--model", str(reference_dir / "artifact"), "--max-wait-ms", "-1"]) == 2
    assert "error: max_wait_ms must be >= 0, got -1.0" in capsys.readouterr().err
    assert main(["serve", "--model", str(reference_dir / "artifact"), "--api-key", "short"]) == 2
    assert "error: the API key must be at least 16 characters long" in capsys.readouterr().err


def test_a_bad_or_busy_port_is_one_line_before_the_model_loads(reference_dir, capsys, monkeypatch):
    import egtr.cli.serve as serve_command
    from egtr.cli import main

    monkeypatch.setattr(serve_command, "load_predictor", lambda args: pytest.fail("the model loaded before the port"))
    model = str(reference_dir / "artifact")
    assert main(["serve", "--model", model, "--port", "80000"]) == 2
    assert capsys.readouterr().err == "error: --port 80000: not a port number; expected 0..65535 (0: any free port)\n"
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        assert main(["serve", "--model", model, "--port", str(port)]) == 2
    errors = capsys.readouterr().err
    assert errors.startswith(f"error: --port {port}: 127.0.0.1:{port} is in use") and errors.count("\n") == 1


@pytest.mark.slow
def test_serve_command_end_to_end(reference_dir):
    model = str(reference_dir / "artifact")
    process = egtr_command("serve", "--model", model, "--port", "0", "--size", "112", "--max-size", "160")
    try:
        url, lines, deadline = None, [], time.monotonic() + 120
        while url is None and time.monotonic() < deadline:
            line = process.stderr.readline()
            assert line or process.poll() is None, "egtr serve exited: " + "".join(lines)
            lines.append(line)
            found = re.search(r"running on (http://127\.0\.0\.1:\d+)", line, flags=re.IGNORECASE)
            url = found.group(1) if found else None
        assert url, "no 'running on' line: " + "".join(lines)
        with httpx.Client(base_url=url, timeout=60) as client:
            while client.get("/readyz").status_code != 200:
                assert time.monotonic() < deadline, "not ready"
                time.sleep(0.1)
            answer = client.post("/v1/scene-graphs", content=ASTRONAUT.read_bytes(), params={"top_k": 4})
            assert answer.status_code == 200 and len(answer.json()["relations"]) == 4
            assert client.get("/v1/model").json()["model"] == model
    finally:
        process.terminate()
        _, rest = process.communicate(timeout=60)
    # SIGTERM: uvicorn shuts down gracefully (finishing queued requests), then re-raises the signal, which egtr
    # reports like every stopped command: exit 143 (128 + SIGTERM), one line
    assert process.returncode == 143
    assert "Application shutdown complete" in rest and "stopped by SIGTERM" in rest
