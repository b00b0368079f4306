"""What a person at the terminal sees: whether stderr is a terminal, and Lightning's noise kept off it.

One place for both, used by the command line, the demo, bulk prediction and training:
- `stderr_is_terminal()`: progress bars only for a person at a terminal (a log file or a SLURM job gets lines);
- `route_library_logging(names, verbose)`: a library's own console handlers removed, its records sent to the root
  handler at WARNING (`verbose`: INFO), so that each line prints once;
- `adopt_lightning_logging()`: the same for Lightning, once it is about to be used (importing it installs a handler);
- `silence_lightning_warnings()`: the warnings of Lightning that nobody running egtr can act on;
- `quiet_lightning_info()`: Lightning's INFO lines (model summary, hardware) off for a block.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import sys
import warnings
from collections.abc import Iterable, Iterator

LIGHTNING_LOGGERS = ("lightning", "lightning.pytorch", "lightning.fabric")

# Warnings raised inside Lightning that say nothing to someone labelling images or training a model with egtr.
LIGHTNING_WARNINGS = (
    r".*isinstance\(treespec, LeafSpec\).*",  # Lightning's pytree use under torch >= 2.9
    r".*does not have many workers which may be a bottleneck.*",  # advice for num_workers=0 runs (on purpose here)
    r".*The number of training batches .* is smaller than the logging interval.*",
    r".*infer the batch indices.*",  # bulk batches come whole from the workers
    r".*GPU available but not used.*",  # the device was chosen (the demo runs on the CPU on purpose)
)


def stderr_is_terminal() -> bool:
    """Whether stderr is a terminal (a person watching): bars there, plain lines in a log file."""
    return sys.stderr.isatty()


def silence_lightning_warnings() -> None:
    """Ignore `LIGHTNING_WARNINGS` (inside `warnings.catch_warnings()` to limit it to a block)."""
    for pattern in LIGHTNING_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)


def route_library_logging(names: Iterable[str], verbose: bool) -> None:
    """Each named logger: own handlers removed (Lightning installs a stream handler: with ours each line came twice),
    records propagated to the root handler, level WARNING (`verbose`: INFO)."""
    for name in names:
        library = logging.getLogger(name)
        library.handlers.clear()
        library.propagate = True
        library.setLevel(logging.INFO if verbose else logging.WARNING)


def adopt_lightning_logging() -> None:
    """Route Lightning's log lines through egtr's one handler (call once Lightning is about to be used).

    Importing `lightning` installs its own console handler on the `lightning` logger whatever the root logger has,
    and its records also propagate to the root: every Lightning line came out twice, advertisements included. The
    import happens lazily inside the commands that train, so this runs there, after `egtr.cli.main` configured
    logging: Lightning's handler is removed and its records go to the root handler, which filters them.
    """
    if importlib.util.find_spec("lightning") is None:
        return
    import lightning  # noqa: F401  (installs the handler being removed)

    route_library_logging(LIGHTNING_LOGGERS, verbose=logging.getLogger().level <= logging.DEBUG)


@contextlib.contextmanager
def quiet_lightning_info() -> Iterator[None]:
    """Lightning's INFO lines (model summary table, hardware, tips) off inside the block; its warnings and progress
    bars stay. The loggers' levels are restored afterwards."""
    loggers = [logging.getLogger(name) for name in LIGHTNING_LOGGERS[1:]]
    levels = [item.level for item in loggers]
    for item in loggers:
        item.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for item, level in zip(loggers, levels):
            item.setLevel(level)
