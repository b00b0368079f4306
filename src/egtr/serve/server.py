"""Running the service: `serve` (what `egtr serve` calls, blocking) and `running_server` (a background server on
an ephemeral loopback port, for tests, benchmarks and notebooks)."""

from __future__ import annotations

import contextlib
import dataclasses
import threading
import time
from collections.abc import Iterator
from typing import Any

from egtr.inference import Predictor
from egtr.serve.settings import ServeSettings, is_loopback


def check_bind_address(host: str, api_key: str | None, insecure: bool) -> None:
    """Refuse to listen beyond this machine without an API key, unless the caller says `insecure`.

    Raises:
        ValueError: `host` is not a loopback address, no API key is set and `insecure` is False.
    """
    if not is_loopback(host) and api_key is None and not insecure:
        raise ValueError(
            f"--host {host} accepts connections from other machines: set an API key (--api-key or EGTR_API_KEY), "
            "or pass --insecure to serve without one (e.g. behind an authenticating reverse proxy)"
        )


def serve(
    predictor: Predictor,
    settings: ServeSettings,
    host: str = "127.0.0.1",
    port: int = 8000,
    *,
    insecure: bool = False,
    log_level: str = "info",
) -> None:
    """Serve `predictor` with uvicorn until interrupted (one process, one model; see docs/serving.md)."""
    import uvicorn

    from egtr.serve.app import create_app

    check_bind_address(host, settings.api_key, insecure)
    settings = dataclasses.replace(settings, host=host)  # the Host names answered follow the address
    uvicorn.run(
        create_app(predictor, settings), host=host, port=port, log_level=log_level, timeout_graceful_shutdown=30
    )


@contextlib.contextmanager
def running_server(app: Any, host: str = "127.0.0.1", port: int = 0, timeout_s: float = 60.0) -> Iterator[str]:
    """Run `app` with uvicorn in a background thread; yields its base URL ("http://127.0.0.1:PORT") once it
    accepts connections (port 0: a free port), and stops it on exit.

    Raises:
        RuntimeError: the server did not start within `timeout_s` (e.g. the port is taken).
    """
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, name="egtr-uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout_s
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            raise RuntimeError(f"the server on {host}:{port} did not start within {timeout_s:.0f} s")
        time.sleep(0.02)
    bound_port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://{host}:{bound_port}"
    finally:
        server.should_exit = True
        thread.join(timeout_s)
