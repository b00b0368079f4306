"""Fixtures of the server tests: the tiny reference model behind a real uvicorn server on an ephemeral port."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason="the serve extra is not installed: pip install 'egtr[serve]'")
httpx = pytest.importorskip("httpx", reason="httpx (dev extra) is not installed")

import egtr  # noqa: E402
from egtr.inference import Predictor  # noqa: E402
from egtr.serve import ServeSettings, create_app, running_server  # noqa: E402

ASSETS = Path(egtr.__file__).parent / "assets"
ASTRONAUT = ASSETS / "astronaut.jpg"
COFFEE = ASSETS / "coffee.jpg"
# The tiny official-format model (tests/fixtures/reference) at a small input size: a forward pass takes ~0.1 s on
# an idle core.
PREDICTOR_OPTIONS = {"device": "cpu", "size": 112, "max_size": 160, "top_k": 15}


@pytest.fixture(scope="session")
def predictor(reference_dir: Path) -> Predictor:
    return Predictor.from_pretrained(reference_dir / "artifact", **PREDICTOR_OPTIONS)


def sibling(predictor: Predictor) -> Predictor:
    """Another Predictor on the same model and preprocessing (to patch its forward pass in a test)."""
    return Predictor(predictor.model, preprocessor=predictor.preprocessor, device="cpu", top_k=predictor.top_k)


def wait_until_ready(client: httpx.Client, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while client.get("/readyz").status_code != 200:
        assert time.monotonic() < deadline, "the server did not become ready"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def server_url(predictor: Predictor) -> Iterator[str]:
    """A server with default settings (no API key), ready."""
    with running_server(create_app(predictor, ServeSettings(model_name="reference"))) as url:
        with httpx.Client(base_url=url, timeout=60) as client:
            wait_until_ready(client)
        yield url


@pytest.fixture()
def client(server_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server_url, timeout=60) as client:
        yield client
