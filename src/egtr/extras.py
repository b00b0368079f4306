"""The optional dependencies ("extras" of `pip install "egtr[EXTRA]"`) and the one check made before using one.

`pip install egtr` brings what predicting images needs (PyTorch, NumPy, SciPy, Pillow, safetensors, tqdm); the rest
is grouped by what it enables. A command that needs an extra checks for it before any work (a model load, a
dataset pass) with `require_extra`, which raises `MissingExtraError`: one line naming the extra and the pip command,
printed by `egtr.cli.main` with exit status 2.

The check looks the modules up without importing them: importing Lightning alone takes seconds.
"""

from __future__ import annotations

import importlib.util

from egtr.errors import MissingExtraError

# The import names each extra of pyproject.toml provides (tests/test_extras.py checks that the two agree).
EXTRA_MODULES: dict[str, tuple[str, ...]] = {
    "train": ("lightning",),  # tensorboard is used when present (metrics go to CSV without it)
    "viz": ("matplotlib", "networkx"),
    "serve": ("fastapi", "uvicorn", "python_multipart"),
    "video": ("av", "supervision", "trackers"),
    "bulk": ("lightning", "webdataset", "braceexpand", "pyarrow"),  # duckdb and pandas: for querying the results
    "onnx": ("onnx", "onnxscript", "onnxruntime"),
    "openvino": ("openvino", "onnx", "onnxscript"),
    "hub": ("huggingface_hub",),
}


def missing_modules(extra: str) -> list[str]:
    """The modules of `extra` that cannot be imported here."""
    return [name for name in EXTRA_MODULES[extra] if importlib.util.find_spec(name) is None]


def has_extra(extra: str) -> bool:
    return not missing_modules(extra)


def require_extra(extra: str, what: str) -> None:
    """Raise `MissingExtraError` ("`what` needs the `extra` extra: pip install ...") unless `extra` is installed.

    `what` names the thing asked for as the user spelt it, e.g. "egtr serve" or "--output-format parquet".
    """
    if not has_extra(extra):
        raise MissingExtraError(what, extra)
