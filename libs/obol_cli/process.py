"""Child processes that cannot outlive the `obol` process that started them.

Every child runs in its own session, so a terminal's Ctrl-C reaches only `obol`, which then
stops the children in order (services before the databases they use). Every child also
gets a parent-death signal (Linux `PR_SET_PDEATHSIG`): if `obol` dies without cleaning up,
even by SIGKILL, the kernel signals each child, so nothing is left running. The signal can
come several times (the kernel sends it as each of `obol`'s threads dies, handing the child
from one to the next), so a child's handler must be idempotent and must not block: the
services' handlers only set an asyncio event.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any

Output = int | IO[Any] | None

# The child is started as this small program, which then becomes the real one (exec keeps
# the pid, the session and the parent-death signal). It runs the setup in a fresh,
# single-threaded process: a `preexec_fn` would run Python in the forked copy of this
# process between fork and exec, which is unsafe once it has threads (gRPC's, in a test
# process or a service) and did crash children now and then (SIGSEGV before exec).
# It starts as this process's user (so it can run this Python even when that is under
# /root) and switches to the target user itself, before prctl: a change of user clears
# the parent-death signal. argv: death signal, parent pid, uid and gid ('' to stay),
# program, arguments.
_EXEC_WITH_DEATH_SIGNAL = """
import ctypes, os, signal, sys
death, parent, uid, gid, program = sys.argv[1:6]
for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
    signal.signal(sig, signal.SIG_DFL)  # not the parent's handling (or ignoring) of them
if uid:
    os.setgroups([])
    os.setgid(int(gid))
    os.setuid(int(uid))
if sys.platform == "linux":
    ctypes.CDLL(None, use_errno=True).prctl(1, int(death))  # PR_SET_PDEATHSIG
if os.getppid() != int(parent):  # the parent died before prctl took effect
    os._exit(1)
os.execv(program, sys.argv[5:])
"""


def _launcher(
    death_signal: signal.Signals,
    argv: Sequence[str | Path],
    env: Mapping[str, str] | None,
    user: pwd.struct_passwd | None,
) -> list[str]:
    search_path = (os.environ if env is None else env).get("PATH", os.defpath)
    program = shutil.which(str(argv[0]), path=search_path) or str(argv[0])
    return [
        sys.executable,
        "-I",  # isolated: no site-packages, no PYTHON* variables, nothing from the cwd
        "-S",
        "-c",
        _EXEC_WITH_DEATH_SIGNAL,
        str(int(death_signal)),
        str(os.getpid()),
        "" if user is None else str(user.pw_uid),
        "" if user is None else str(user.pw_gid),
        program,
        *(str(arg) for arg in argv[1:]),
    ]


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
        _launcher(death_signal, argv, env, user),
        env=None if env is None else dict(env),
        stdin=subprocess.DEVNULL,
        stdout=stdout,
        stderr=stderr,
        cwd=cwd,
        start_new_session=True,
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
