"""The unprivileged account that runs the embedded Postgres when obol runs as root."""

from __future__ import annotations

import os
import pwd
import stat
import subprocess
import sys
from pathlib import Path

from .errors import ObolCliError

POSTGRES_USER = "obol-pg"


def unprivileged_user(name: str = POSTGRES_USER) -> pwd.struct_passwd:
    """The system account `name`, created (no home, no login shell) if missing."""
    try:
        return pwd.getpwnam(name)
    except KeyError:
        pass
    result = subprocess.run(
        [
            *("useradd", "--system", "--user-group", "--no-create-home"),
            *("--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin", name),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    try:  # also succeeds when a concurrent run created the account first
        return pwd.getpwnam(name)
    except KeyError:
        raise ObolCliError(
            f"cannot create system user {name!r} to run Postgres as non-root: "
            f"{result.stderr.strip() or 'useradd failed'}"
        ) from None


def make_reachable(path: Path, user: pwd.struct_passwd) -> None:
    """Let `user` traverse every directory above `path`.

    Adds only the search bit for others (o+x: enter, not list) to ancestors lacking it,
    such as /root or pytest's /tmp/pytest-of-root, and says so on stderr.
    """
    for parent in reversed(path.resolve().parents):
        mode = parent.stat().st_mode
        if mode & stat.S_IXOTH or parent.stat().st_uid == user.pw_uid:
            continue
        os.chmod(parent, stat.S_IMODE(mode) | stat.S_IXOTH)
        print(
            f"obol: added search permission (o+x) to {parent} so {user.pw_name} can reach {path}",
            file=sys.stderr,
        )
