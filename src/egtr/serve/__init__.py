"""`egtr serve`: scene graphs over HTTP, with a web page (docs/serving.md).

    >>> from egtr import Predictor
    >>> from egtr.serve import ServeSettings, create_app
    >>> app = create_app(Predictor.from_pretrained("model_dir"), ServeSettings(max_batch=8))
    >>> # uvicorn.run(app, host="127.0.0.1", port=8000)

Needs the `serve` extra (FastAPI, uvicorn, python-multipart); importing this package alone does not import them,
so the command line works without the extra.
"""

from __future__ import annotations

from typing import Any

__all__ = ["ServeSettings", "create_app", "running_server", "serve"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from egtr.serve.app import create_app

        return create_app
    if name in ("serve", "running_server"):
        from egtr.serve import server

        return getattr(server, name)
    if name == "ServeSettings":
        from egtr.serve.settings import ServeSettings

        return ServeSettings
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
