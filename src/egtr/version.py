"""The package version: the one place it is written.

setuptools reads it from this file for the wheel's metadata (pyproject.toml: `dynamic = ["version"]`), so
`egtr.__version__`, `egtr --version` and `importlib.metadata.version("egtr")` of an installed wheel agree. It lives
in a module of its own so that any module can read it without importing `egtr` itself. Releases are listed in
CHANGELOG.md; between releases the version is the next one with `.devN`.
"""

__version__ = "0.2.0.dev0"
