"""Run named child processes, stream their output prefixed with their name, stop them all.

Used by `obol run` for the services and by the test suite's `stack` fixture.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Self, TextIO

from .process import spawn, stop_all

_COLORS = ("36", "33", "35", "32", "34", "31")


class Child:
    """A running child whose output a thread pumps, prefixed, into the sink."""

    def __init__(
        self,
        name: str,
        process: subprocess.Popen[bytes],
        *,
        prefix: str,
        sink: TextIO,
        lock: threading.RLock,
        tail_size: int,
    ) -> None:
        self.name = name
        self.process = process
        self._prefix = prefix
        self._sink = sink
        self._lock = lock
        self._tail: deque[str] = deque(maxlen=tail_size)
        self._pump = threading.Thread(target=self._pump_output, name=f"log-{name}", daemon=True)
        self._pump.start()

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def returncode(self) -> int | None:
        return self.process.poll()

    def tail(self, count: int = 30) -> list[str]:
        """The last `count` lines the child wrote (stdout and stderr)."""
        with self._lock:
            return list(self._tail)[-count:]

    def join_output(self, timeout: float) -> None:
        """Wait until the child's output has been fully written to the sink."""
        self._pump.join(timeout)

    def _pump_output(self) -> None:
        stream = self.process.stdout
        assert stream is not None
        with stream:
            for raw in iter(stream.readline, b""):
                line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
                with self._lock:
                    self._tail.append(line)
                    self._sink.write(f"{self._prefix}{line}\n")
                    self._sink.flush()


class Supervisor:
    """Starts children in their own sessions (see `obol_cli.process`), prefixes each output
    line with the child's name, and stops them all on `stop()` or when the `with` ends:
    SIGTERM, up to `stop_timeout` seconds of grace, then SIGKILL of every process group."""

    def __init__(
        self,
        sink: TextIO | None = None,
        *,
        stop_timeout: float = 15.0,
        label_width: int = 8,
        tail_size: int = 200,
        color: bool | None = None,
    ) -> None:
        self._sink = sink if sink is not None else sys.stdout
        self._stop_timeout = stop_timeout
        self._label_width = label_width
        self._tail_size = tail_size
        self._color = self._sink.isatty() if color is None else color
        self._lock = threading.RLock()  # reentrant: signal handlers write too
        self._children: dict[str, Child] = {}

    @property
    def children(self) -> tuple[Child, ...]:
        return tuple(self._children.values())

    def __getitem__(self, name: str) -> Child:
        return self._children[name]

    def start(self, name: str, argv: Sequence[str], env: Mapping[str, str]) -> Child:
        if name in self._children:
            raise ValueError(f"a child named {name!r} was already started")
        process = spawn(
            argv,
            death_signal=signal.SIGTERM,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        child = Child(
            name,
            process,
            prefix=self._prefix(name),
            sink=self._sink,
            lock=self._lock,
            tail_size=self._tail_size,
        )
        self._children[name] = child
        return child

    def write(self, text: str) -> None:
        """Write a line to the sink without interleaving with children's lines."""
        with self._lock:
            self._sink.write(text + "\n")
            self._sink.flush()

    def first_exited(self) -> Child | None:
        return next((c for c in self._children.values() if c.returncode is not None), None)

    def wait_any(self, poll_interval: float = 0.2) -> Child:
        """Block until some child exits and return it."""
        while (child := self.first_exited()) is None:
            time.sleep(poll_interval)
        return child

    def stop(self) -> None:
        """Stop every child (SIGTERM, grace, SIGKILL) and wait until they have exited."""
        children = self.children
        stop_all([c.process for c in children], sig=signal.SIGTERM, timeout=self._stop_timeout)
        for child in children:
            child.join_output(timeout=2.0)

    def _prefix(self, name: str) -> str:
        label = f"{name:<{self._label_width}} |"
        if self._color:
            color = _COLORS[len(self._children) % len(_COLORS)]
            label = f"\033[{color}m{label}\033[0m"
        return label + " "

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
