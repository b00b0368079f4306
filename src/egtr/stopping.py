"""SIGTERM and SIGINT (Ctrl-C) as one exception, `Stopped`, that the command line turns into exit 143 / 130.

Why not Python's defaults: SIGTERM kills the process without any cleanup (no message, temporary files left), and
Lightning turns both signals into something else: its signal connector makes SIGTERM a graceful stop at the next
batch that ends the process with `SystemExit()` (status 0, as if training had finished), and its trainer turns
`KeyboardInterrupt` into `sys.exit(1)`. `Stopped` is a `BaseException` that is not a `KeyboardInterrupt`: no
`except Exception` swallows it, Lightning tears the trainer down and re-raises it unchanged, and `atomic_write`
removes its temporary file on the way out, so nothing half-written stays behind.

`stop_on_signals()` installs the handlers for the duration of a command (`egtr.cli.main`). Code that must not be cut
in the middle of a unit of work (the files of one image) runs it inside `finish_before_stopping()`: a signal that
arrives there is raised when the block ends. Whoever knows what was saved adds it to the exception
(`Stopped.add_detail`) on its way up; the command line prints one line with all of it.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator
from types import FrameType

HANDLED_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Stopped(BaseException):
    """The process received SIGTERM or SIGINT; `details` say what was saved and how to continue."""

    def __init__(self, signal_number: int) -> None:
        super().__init__(signal_number)
        self.signal_number = signal_number
        self.details: list[str] = []

    @property
    def signal_name(self) -> str:
        return signal.Signals(self.signal_number).name

    @property
    def exit_code(self) -> int:
        """The shell's convention for a process ended by a signal: 128 + its number (143 SIGTERM, 130 SIGINT)."""
        return 128 + self.signal_number

    def add_detail(self, text: str) -> None:
        self.details.append(text)

    def message(self) -> str:
        return f"stopped by {self.signal_name}" + (f": {'; '.join(self.details)}" if self.details else "")


class _StopState:
    """The signal handler's state: the process that installed it, pending stop, how deeply a stop is held off."""

    def __init__(self) -> None:
        self.owner_pid = os.getpid()
        self.pending: Stopped | None = None
        self.raised = False
        self.held = 0

    def handle(self, signal_number: int, frame: FrameType | None) -> None:
        if os.getpid() != self.owner_pid:
            # A forked child (a DataLoader worker) inherits this handler: it behaves as without egtr, and the parent
            # process decides how the command ends.
            _default_action(signal_number)
            return
        if self.pending is not None:
            return  # a second signal while stopping: the cleanup of the first one must not be cut short
        self.pending = Stopped(signal_number)
        if self.held == 0:
            self.raised = True
            raise self.pending


_state: _StopState | None = None


def _default_action(signal_number: int) -> None:
    if signal_number == signal.SIGINT:
        raise KeyboardInterrupt
    signal.signal(signal_number, signal.SIG_DFL)
    os.kill(os.getpid(), signal_number)


@contextlib.contextmanager
def stop_on_signals() -> Iterator[None]:
    """Raise `Stopped` on SIGTERM / SIGINT inside the block (main thread only); the old handlers come back after."""
    global _state
    previous_state = _state
    previous = {number: signal.getsignal(number) for number in HANDLED_SIGNALS}
    _state = _StopState()
    for number in HANDLED_SIGNALS:
        signal.signal(number, _state.handle)
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
        _state = previous_state


@contextlib.contextmanager
def finish_before_stopping() -> Iterator[None]:
    """Run the block to its end even if a stop signal arrives meanwhile; the `Stopped` is raised after it."""
    state = _state
    if state is None or state.owner_pid != os.getpid():
        yield
        return
    state.held += 1
    try:
        yield
    finally:
        state.held -= 1
        if state.held == 0 and state.pending is not None and not state.raised:
            state.raised = True
            raise state.pending  # also after an error in the block: the stop is what ends the command
