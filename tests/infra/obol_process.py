"""Drive `obol` as a real process (as `make run` does) and inspect what it leaves behind."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterable
from pathlib import Path

import psutil

from .helpers import alive

FAKES = Path(__file__).parent / "fake_services"


def leftovers(marker: str, ports: Iterable[str] = ()) -> list[psutil.Process]:
    """Live processes of one test's `obol`: those whose command line or environment
    mentions `marker` (its temporary directory) or one of `ports` (Redis rewrites its
    title and environment), and all their descendants (Postgres's backends)."""
    port_re = re.compile("|".join(rf":{re.escape(p)}\b" for p in ports) or r"(?!)")
    seeds: set[int] = set()
    parents: dict[int, int] = {}
    for process in psutil.process_iter(["pid", "ppid", "cmdline", "status"]):
        info = process.info
        if info["pid"] == os.getpid() or info["status"] == psutil.STATUS_ZOMBIE:
            continue
        parents[info["pid"]] = info["ppid"]
        command = " ".join(info["cmdline"] or ())
        try:
            environ = process.environ().values()
        except psutil.Error:
            environ = []
        if marker in command or port_re.search(command) or any(marker in v for v in environ):
            seeds.add(info["pid"])
    found = set(seeds)
    while grown := {pid for pid, ppid in parents.items() if ppid in found} - found:
        found |= grown
    return [psutil.Process(pid) for pid in sorted(found) if alive(pid)]


def describe(processes: Iterable[psutil.Process]) -> list[str]:
    """Pid, parent, status, age and command line of each: what a failure needs to say."""
    lines = []
    for process in processes:
        try:
            with process.oneshot():
                age = time.time() - process.create_time()
                command = " ".join(process.cmdline())[:300]
                lines.append(
                    f"pid {process.pid} (parent {process.ppid()}, {process.status()}, "
                    f"{age:.1f}s old): {command}"
                )
        except psutil.Error as gone:
            lines.append(f"pid {process.pid}: {gone!r}")
    return lines


def wait_no_leftovers(
    marker: str, ports: Iterable[str] = (), timeout: float = 15.0
) -> list[psutil.Process]:
    deadline = time.monotonic() + timeout
    while (left := leftovers(marker, ports)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return left


class ObolProcess:
    """`obol <args>` in its own session, its output collected line by line."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "obol_cli", *args],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for raw in self.process.stdout:
            self.lines.append(raw.decode("utf-8", errors="replace").rstrip("\n"))

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_for(self, text: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while not any(text in line for line in self.lines):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self._reader.join(2)
                raise AssertionError(f"{text!r} never appeared; output:\n{self.output}")
            time.sleep(0.05)

    def signal(self, sig: signal.Signals) -> None:
        self.process.send_signal(sig)

    def wait(self, timeout: float = 30.0) -> int:
        code = self.process.wait(timeout)
        self._reader.join(5)
        return code

    def kill_everything(self, marker: str, ports: Iterable[str]) -> None:
        """Test clean-up, whatever happened: obol and anything it left behind."""
        if alive(self.process.pid):
            self.process.kill()
        self.process.wait()
        for process in leftovers(marker, ports):
            with contextlib.suppress(psutil.Error):
                process.kill()
