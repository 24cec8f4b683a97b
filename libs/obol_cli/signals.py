"""Stop signals for long-running commands: the first one unwinds, later ones cannot.

The first SIGINT, SIGTERM or SIGHUP raises `Interrupted` in the main thread, so `with`
blocks stop what they started, in reverse order. Once shutdown has begun (by a signal or
by `shutting_down()`), further signals are reported and ignored: an impatient second
Ctrl-C cannot abort the cleanup half-way and leave processes behind.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from types import FrameType, TracebackType
from typing import Any, Self

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Interrupted(Exception):
    """A stop signal arrived (not an error: the user asked to stop)."""

    def __init__(self, signum: int) -> None:
        self.signal = signal.Signals(signum)
        super().__init__(self.signal.name)


class StopSignals:
    """Installs the stop-signal handlers for the duration of a `with` block."""

    def __init__(self, notify: Callable[[str], None]) -> None:
        self._notify = notify
        self._stopping = False
        self._previous: dict[signal.Signals, Any] = {}

    def shutting_down(self) -> None:
        self._stopping = True

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if self._stopping:
            self._notify(f"{name} received; already stopping")
            return
        self._stopping = True
        self._notify(f"{name} received; stopping")
        raise Interrupted(signum)

    def __enter__(self) -> Self:
        for sig in STOP_SIGNALS:
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
