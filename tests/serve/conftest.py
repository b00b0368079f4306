"""Fixtures of the server tests: the tiny reference model behind a real uvicorn server on an ephemeral port."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import pytest

pytest.importorskip("fastapi", reason="the serve extra is not installed: pip install 'egtr[serve]'")
httpx = pytest.importorskip("httpx", reason="httpx (dev extra) is not installed")

import anyio  # noqa: E402

import egtr  # noqa: E402
from egtr.inference import Predictor  # noqa: E402
from egtr.serve import ServeSettings, create_app, running_server  # noqa: E402

# Starlette's file responses import anyio's file module lazily, in the server's thread. anyio is a pytest plugin, so
# pytest rewrites that module's asserts on import, with `ast.parse`, which CPython 3.11 does not make safe against
# another thread parsing at the same time ("SystemError: AST constructor recursion depth mismatch", seen in this
# suite run in parallel): import it here, in the main thread, once.
anyio.open_file  # noqa: B018

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


@dataclass
class Gate:
    """A Predictor whose forward pass waits until `gate` is set; `entered` is set once the model thread is in it,
    `images` lists the batch sizes the model was given."""

    predictor: Predictor
    entered: threading.Event = field(default_factory=threading.Event)
    gate: threading.Event = field(default_factory=threading.Event)
    images: list[int] = field(default_factory=list)


def gated(predictor: Predictor) -> Gate:
    held = Gate(sibling(predictor))
    forward = held.predictor.forward

    def blocked_forward(batch):
        held.images.append(len(batch))
        held.entered.set()
        assert held.gate.wait(60), "the test never opened the gate"
        return forward(batch)

    held.predictor.forward = blocked_forward  # type: ignore[method-assign]
    return held


def wait_for(condition: Callable[[], bool], what: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"{what} did not happen within {timeout_s:.0f} s"
        time.sleep(0.02)


def wait_until_ready(client: httpx.Client, timeout_s: float = 60.0) -> None:
    wait_for(lambda: client.get("/readyz").status_code == 200, "the server becoming ready", timeout_s)


def raw_request(url: str, head: str, body: bytes = b"") -> socket.socket:
    """Send an HTTP request by hand (`head`: request line and headers, without the blank line) on a new
    connection to the server at `url`, and return the connection, to be read or closed by the test."""
    parts = urlsplit(url)
    connection = socket.create_connection((parts.hostname, parts.port), timeout=30)
    connection.sendall(head.encode() + b"\r\n\r\n" + body)
    return connection


def read_answer(connection: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection."""
    chunks = []
    while chunk := connection.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


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
