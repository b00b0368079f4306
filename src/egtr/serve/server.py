"""Running the service: `serve` (what `egtr serve` calls, blocking) and `running_server` (a background server on
an ephemeral loopback port, for tests, benchmarks and notebooks)."""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import logging
import socket
import threading
import time
from collections.abc import Iterator

from egtr.errors import ConfigError
from egtr.inference import Predictor
from egtr.serve.limits import ASGIApp
from egtr.serve.security import bound_name
from egtr.serve.settings import ServeSettings, is_loopback

logger = logging.getLogger(__name__)


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


def bind_socket(host: str, port: int) -> socket.socket:
    """Take `host`:`port` now, listening: called before the model loads, so that a bad or busy port is found at
    once, and no other process can take the port between this check and the server's start (race-free).
    Connections that arrive before the server runs wait in the socket's backlog.

    Raises:
        ConfigError: a port outside 0..65535, a host that is not an address of this machine, a port in use or
            not permitted; the message names the option.
    """
    if not 0 <= port <= 65535:
        raise ConfigError(f"--port {port}: not a port number; expected 0..65535 (0: any free port)")
    address = bound_name(host)
    try:
        return socket.create_server(
            (address, port), family=socket.AF_INET6 if ":" in address else socket.AF_INET, backlog=2048
        )
    except socket.gaierror as error:
        raise ConfigError(f"--host {host}: no such address or name ({error.strerror})") from None
    except OSError as error:
        raise ConfigError(_bind_problem(host, port, error)) from None


def _bind_problem(host: str, port: int, error: OSError) -> str:
    if error.errno == errno.EADDRINUSE:
        return f"--port {port}: {host}:{port} is in use (another server?); choose another port, or 0 for any free one"
    if error.errno == errno.EACCES:
        return f"--port {port}: not permitted to listen on it (ports below 1024 need administrator rights)"
    if error.errno == errno.EADDRNOTAVAIL:
        return f"--host {host}: not an address of this machine"
    return f"--host {host} --port {port}: cannot listen there ({error.strerror or error})"


def serve(
    predictor: Predictor,
    settings: ServeSettings,
    host: str = "127.0.0.1",
    port: int = 8000,
    *,
    insecure: bool = False,
    log_level: str = "info",
    sock: socket.socket | None = None,
) -> None:
    """Serve `predictor` with uvicorn until interrupted (one process, one model; see docs/serving.md).

    `sock`: the socket of `bind_socket(host, port)` taken beforehand (the command line binds before loading the
    model); by default it is bound here. The socket is closed when the server stops.
    """
    import uvicorn

    from egtr.serve.app import create_app

    check_bind_address(host, settings.api_key, insecure)
    listening = sock or bind_socket(host, port)
    settings = dataclasses.replace(settings, host=host)  # the Host names answered follow the address
    config = uvicorn.Config(create_app(predictor, settings), log_level=log_level, timeout_graceful_shutdown=30)
    address, bound_port = listening.getsockname()[:2]
    url = f"http://[{address}]:{bound_port}" if ":" in address else f"http://{address}:{bound_port}"

    class Server(uvicorn.Server):
        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets)
            logger.info("running on %s (Ctrl+C to quit)", url)  # uvicorn says it only for sockets it binds itself

    with listening:
        Server(config).run(sockets=[listening])


@contextlib.contextmanager
def running_server(app: ASGIApp, host: str = "127.0.0.1", port: int = 0, timeout_s: float = 60.0) -> Iterator[str]:
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
