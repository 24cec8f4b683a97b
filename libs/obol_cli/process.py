"""Child processes that cannot outlive the `obol` process that started them.

Every child runs in its own session, so a terminal's Ctrl-C reaches only `obol`, which then
stops the children in order (services before the databases they use). Every child also
gets a parent-death signal (Linux `PR_SET_PDEATHSIG`): if `obol` dies without cleaning up,
even by SIGKILL, the kernel signals each child, so nothing is left running.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import pwd
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

_PR_SET_PDEATHSIG = 1
_prctl = ctypes.CDLL(None, use_errno=True).prctl if sys.platform == "linux" else None

Output = int | IO[Any] | None


def _child_setup(death_signal: signal.Signals, parent_pid: int) -> Callable[[], None]:
    """Runs in the forked child, after the switch to the target user and before exec."""

    def setup() -> None:
        # The child must not inherit obol's own handling (or ignoring) of stop signals.
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_DFL)
        if _prctl is not None:
            _prctl(_PR_SET_PDEATHSIG, int(death_signal))
        if os.getppid() != parent_pid:  # the parent died before prctl took effect
            os._exit(1)

    return setup


def spawn(
    argv: Sequence[str | Path],
    *,
    death_signal: signal.Signals = signal.SIGTERM,
    env: Mapping[str, str] | None = None,
    stdout: Output = None,
    stderr: Output = None,
    cwd: Path | None = None,
    user: pwd.struct_passwd | None = None,
) -> subprocess.Popen[bytes]:
    """Start `argv` in a new session, sent `death_signal` if this thread dies.

    The parent-death signal follows the *thread* that forks, so call this from a thread that
    lives as long as the child (the main thread in `obol` and in pytest fixtures).
    `user` runs the child as that account (the caller must be root).
    """
    return subprocess.Popen(
        [str(arg) for arg in argv],
        env=None if env is None else dict(env),
        stdin=subprocess.DEVNULL,
        stdout=stdout,
        stderr=stderr,
        cwd=cwd,
        start_new_session=True,
        preexec_fn=_child_setup(death_signal, os.getpid()),
        user=None if user is None else user.pw_uid,
        group=None if user is None else user.pw_gid,
        extra_groups=None if user is None else [],
    )


def kill_group(pid: int) -> None:
    """SIGKILL whatever is left of the process group led by `pid` (no error if none)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def stop_all(
    processes: Sequence[subprocess.Popen[bytes]],
    *,
    sig: signal.Signals = signal.SIGTERM,
    timeout: float,
) -> None:
    """Send `sig` to each process, wait up to `timeout` seconds in all, then SIGKILL every
    process group (stragglers and grandchildren included) and reap the processes."""
    for proc in processes:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(sig)
    deadline = time.monotonic() + timeout
    for proc in processes:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=max(0.0, deadline - time.monotonic()))
    for proc in processes:
        kill_group(proc.pid)
        proc.wait()


def tail_lines(path: Path, count: int = 30) -> list[str]:
    """The last `count` lines of a (log) file; empty if it does not exist."""
    try:
        with path.open("rb") as file:
            file.seek(0, os.SEEK_END)
            file.seek(max(0, file.tell() - 64 * 1024))
            text = file.read().decode("utf-8", errors="replace")
    except FileNotFoundError:
        return []
    return text.splitlines()[-count:]
