"""Old import paths that keep working for one release, with a `DeprecationWarning`."""

from __future__ import annotations

import importlib
import sys
import warnings


def alias_module(old: str, new: str) -> None:
    """Make `import old` give the module `new` itself (same object: attributes, monkeypatching and `isinstance`
    checks behave as with the new path) and warn once per import of the old path."""
    warnings.warn(f"{old} moved to {new}; the old path works for this release only", DeprecationWarning, stacklevel=3)
    sys.modules[old] = importlib.import_module(new)
