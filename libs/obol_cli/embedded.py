"""Embedded Postgres and Redis servers (and a small Redis Cluster) for `obol run` and the
test suite.

Each server is a child process of the caller (see `obol_cli.process`): stopped on `stop()`,
on leaving the `with` block, or by the kernel if the caller dies. Data lives in `data_dir`,
so a server restarted on the same directory finds its data again.
"""

from __future__ import annotations

import importlib.util
import os
import pwd
import random
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, TYPE_CHECKING, Self
from urllib.parse import quote

from .errors import ObolCliError
from .process import spawn, stop_all, tail_lines
from .sysuser import make_reachable, unprivileged_user

if TYPE_CHECKING:
    import redis

__all__ = [
    "EmbeddedPostgres",
    "EmbeddedRedis",
    "EmbeddedRedisCluster",
    "EmbeddedServerError",
    "free_cluster_port",
    "free_port",
]

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


BUNDLED_REDIS = Path(sys.prefix) / "opt" / "redis"


def _package_dir(name: str) -> Path | None:
    """Where an installed package lives, without importing it (pgserver's import registers
    atexit hooks we do not want)."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


@dataclass(frozen=True)
class ClientCert:
    """A client's certificate and key (PEM)."""

    cert_file: Path
    key_file: Path


@dataclass(frozen=True)
class ServerTls:
    """The PEM files an embedded server serves TLS with: its certificate (chain) and key,
    and the CA that clients verify it against (which goes into the server's URL).

    With `client` (mutual TLS), the server accepts only clients presenting a certificate
    issued by the same CA, and its URL presents `client`. For Postgres, the certificate's
    common name must be the user's (`postgres`).
    """

    cert_file: Path
    key_file: Path
    ca_file: Path
    client: ClientCert | None = None

    def query(self, ca: str, cert: str, key: str) -> str:
        """URL query arguments naming the CA and, with `client`, its certificate and key,
        under the given argument names."""
        files = {ca: self.ca_file}
        if self.client is not None:
            files |= {cert: self.client.cert_file, key: self.client.key_file}
        return "&".join(f"{name}={quote(str(path), safe='')}" for name, path in files.items())


def postgres_bindir(*, tls: bool = False) -> Path:
    """The Postgres binaries to use: the ones bundled in the pinned `pgserver` wheel, else the
    system's (`postgres` on PATH, else the newest /usr/lib/postgresql/N/bin). With `tls`, the
    first of those built with OpenSSL (pgserver's is not; Debian's is).

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
        complete = all((bindir / tool).is_file() for tool in ("postgres", "initdb", "psql"))
        if complete and (not tls or _built_with_openssl(bindir)):
            return bindir
    raise EmbeddedServerError(
        "no Postgres binaries found (pgserver's bundled ones, or postgres/initdb/psql "
        "on PATH or in /usr/lib/postgresql/*/bin)"
        + (" built with OpenSSL (e.g. Debian's postgresql-15)" if tls else "")
    )


def _built_with_openssl(bindir: Path) -> bool:
    pg_config = bindir / "pg_config"
    if not pg_config.is_file():
        return False
    configure = subprocess.run(
        [pg_config, "--configure"], capture_output=True, text=True, check=False
    ).stdout
    return "openssl" in configure


def redis_server_binary() -> Path:
    """The `redis-server` to use: the system's on PATH, else the bundled one.

    A distribution's build is preferred where present (it is the one operators patch and
    know). The bundled one is Debian 12's Redis 7.0 that `make` unpacks into the venv
    (tools/fetch_redis.sh, decision D18): the major version deploy/k8s runs, with TLS.
    """
    if on_path := shutil.which("redis-server"):
        return Path(on_path)
    if (bundled := BUNDLED_REDIS / "bin" / "redis-server").is_file():
        return bundled
    raise EmbeddedServerError(
        f"no redis-server found (on PATH or in {BUNDLED_REDIS}: run `make install`)"
    )


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

    def check_running(self) -> None:
        """EmbeddedServerError (with the tail of the log) unless the server is running."""
        if self._proc is None:
            raise EmbeddedServerError(f"{self.name} on port {self.port} is not running")
        if (code := self._proc.poll()) is not None:
            raise EmbeddedServerError(
                f"{self.name} on port {self.port} exited with code {code}", self.log
            )

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

    def __init__(
        self,
        data_dir: Path,
        port: int,
        *,
        tls: ServerTls | None = None,
        timeout: float = 30.0,
    ) -> None:
        super().__init__(data_dir, port, "postgres.log", timeout=timeout)
        self.pgdata = self.data_dir / "pgdata"
        self.tls = tls
        self.bindir = postgres_bindir(tls=tls is not None)
        self._user = unprivileged_user() if os.geteuid() == 0 else None

    @property
    def url(self) -> str:
        return self.dsn(self.DATABASE)

    def dsn(self, database: str) -> str:
        """With `tls`, the DSN verifies the server's certificate and name against the CA."""
        dsn = f"postgres://{self.SUPERUSER}@{HOST}:{self.port}/{database}"
        if self.tls is None:
            return dsn
        return f"{dsn}?sslmode=verify-full&" + self.tls.query("sslrootcert", "sslcert", "sslkey")

    def _start(self) -> None:
        self._prepare_dirs()
        self._init_cluster()
        self._write_access_rules()
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
        if self.tls is not None:
            settings |= {
                "ssl": "on",
                "ssl_cert_file": str(self._tls_dir / "server.crt"),
                "ssl_key_file": str(self._tls_dir / "server.key"),
                # Client certificates are checked against it (pg_hba's clientcert).
                "ssl_ca_file": str(self._tls_dir / "ca.pem"),
            }
        return [arg for key, value in settings.items() for arg in ("-c", f"{key}={value}")]

    @property
    def _tls_dir(self) -> Path:
        return self.data_dir / "tls"

    def _write_access_rules(self) -> None:
        """pg_hba.conf, every start: trust on 127.0.0.1, and with `tls` only over TLS (a
        plain connection finds no rule and is refused), with `tls.client` only with a client
        certificate from the CA whose name is the user's. The server's certificate, key and
        CA are copied into the data directory, readable by the server's user alone (as
        Postgres requires of the key)."""
        rule = f"{'host' if self.tls is None else 'hostssl'} all all {HOST}/32 trust"
        if self.tls is not None and self.tls.client is not None:
            rule += " clientcert=verify-full"
        (self.pgdata / "pg_hba.conf").write_text(rule + "\n")
        if self.tls is None:
            return
        self._tls_dir.mkdir(exist_ok=True)
        for source, name in (
            (self.tls.cert_file, "server.crt"),
            (self.tls.key_file, "server.key"),
            (self.tls.ca_file, "ca.pem"),
        ):
            target = self._tls_dir / name
            shutil.copyfile(source, target)
            target.chmod(0o600)
            if self._user is not None:
                os.chown(target, self._user.pw_uid, self._user.pw_gid)

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
        if self.tls is not None and self.tls.client is not None:
            client = self.tls.client
            env |= {"PGSSLCERT": str(client.cert_file), "PGSSLKEY": str(client.key_file)}
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
    - `cluster=True` makes it a Redis Cluster node (its cluster state in
      `data_dir/nodes.conf`, its cluster bus on `port` + 10000) with no slots yet:
      `EmbeddedRedisCluster` forms a cluster of such nodes.
    - `replica_of=<port>` makes it a replica of the Redis on 127.0.0.1:<port> (not for
      cluster nodes, whose replicas are assigned with CLUSTER REPLICATE); promote it with
      `REPLICAOF NO ONE`.
    """

    name = "Redis"
    stop_signal = signal.SIGTERM  # Redis fsyncs the AOF and exits

    def __init__(
        self,
        data_dir: Path,
        port: int,
        appendfsync: str = "always",
        *,
        cluster: bool = False,
        cluster_node_timeout_ms: int = 5000,
        replica_of: int | None = None,
        tls: ServerTls | None = None,
        timeout: float = 30.0,
    ) -> None:
        if appendfsync not in _APPENDFSYNC:
            raise ValueError(f"appendfsync must be one of {', '.join(_APPENDFSYNC)}")
        if cluster and replica_of is not None:
            raise ValueError("a cluster node's primary is set with CLUSTER REPLICATE")
        if cluster and port + CLUSTER_BUS_OFFSET > 65535:
            raise ValueError(f"port {port} leaves no room for its cluster bus port (+10000)")
        super().__init__(data_dir, port, "redis.log", timeout=timeout)
        self.appendfsync = appendfsync
        self.cluster = cluster
        self.cluster_node_timeout_ms = cluster_node_timeout_ms
        self.replica_of = replica_of
        self.tls = tls
        self.binary = redis_server_binary()

    @property
    def url(self) -> str:
        """With `tls`, a `rediss://` URL whose client verifies the server against the CA."""
        if self.tls is None:
            return f"redis://{HOST}:{self.port}/0"
        return f"rediss://{HOST}:{self.port}/0?" + self.tls.query(
            "ssl_ca_certs", "ssl_certfile", "ssl_keyfile"
        )

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
        if self.tls is not None:
            # TLS only: no plain port. Client certificates only with `tls.client`.
            settings |= {
                "port": "0",
                "tls-port": str(self.port),
                "tls-cert-file": str(self.tls.cert_file),
                "tls-key-file": str(self.tls.key_file),
                "tls-ca-cert-file": str(self.tls.ca_file),
                "tls-auth-clients": "no" if self.tls.client is None else "yes",
                # Cluster nodes and replicas talk TLS to each other too (same CA).
                "tls-cluster": "yes",
                "tls-replication": "yes",
            }
        if self.cluster:
            # The cluster's view of itself (node ids, epochs, slots) is kept in `dir`.
            settings |= {
                "cluster-enabled": "yes",
                "cluster-config-file": "nodes.conf",
                # How long a node may be unreachable before it is failed (and its replica
                # takes over).
                "cluster-node-timeout": str(self.cluster_node_timeout_ms),
            }
        args = [arg for key, value in settings.items() for arg in (f"--{key}", value)]
        if self.replica_of is not None:
            args += ["--replicaof", HOST, str(self.replica_of)]  # two words: two arguments
        self._launch([self.binary, *args])
        self._wait_until(self._is_ready)

    def _is_ready(self) -> bool:
        """PING answers +PONG once the AOF is loaded (-LOADING until then), and INFO names
        our process (not another server that already had the port)."""
        try:
            with (
                self._connect() as sock,
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

    def _connect(self) -> socket.socket:
        sock = socket.create_connection((HOST, self.port), timeout=0.5)
        if self.tls is None:
            return sock
        context = ssl.create_default_context(cafile=self.tls.ca_file)
        if self.tls.client is not None:
            context.load_cert_chain(self.tls.client.cert_file, self.tls.client.key_file)
        return context.wrap_socket(sock, server_hostname=HOST)


# A node's cluster bus listens on its port + 10000 (Redis's default; `cluster-port`, new in
# 7.0, is left alone so that a system's Redis 6.2 on PATH forms clusters the same way).
CLUSTER_BUS_OFFSET = 10000
CLUSTER_SLOTS = 16384
_CLUSTER_PORTS = (20000, 65535 - CLUSTER_BUS_OFFSET)


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
        return True


def free_cluster_port(taken: Collection[int] = ()) -> int:
    """A port on 127.0.0.1 free right now whose cluster bus port (port + 10000) is free
    too, neither of them one of the ports (or bus ports) of the nodes in `taken`.

    `free_port()` cannot be used: the OS picks ports from the ephemeral range (usually
    32768-60999), where port + 10000 often does not exist. Candidates are drawn at random
    from 20000-55535 and both ports checked by binding them; as with `free_port()`, another
    process could still take them before they are used.
    """
    reserved = {q for t in taken for q in (t, t + CLUSTER_BUS_OFFSET)}
    for _ in range(1000):
        port = random.randint(*_CLUSTER_PORTS)
        bus = port + CLUSTER_BUS_OFFSET
        if reserved.isdisjoint((port, bus)) and _bindable(port) and _bindable(bus):
            return port
    raise EmbeddedServerError("no free port pair (port, port + 10000) for a Redis Cluster node")


class EmbeddedRedisCluster:
    """A private Redis Cluster on 127.0.0.1: `masters` `EmbeddedRedis` nodes started with
    `cluster=True`, each with `replicas` replicas, each node in `data_dir/node-<port>`, the
    16384 hash slots split evenly between the masters (as `redis-cli --cluster create
    --cluster-replicas <replicas>` would).

    `start()` starts the nodes and, if none of them serves slots yet, forms the cluster
    itself, without redis-cli (which does not come with every redis-server): each master
    gets its own config epoch and its range of slots (CLUSTER ADDSLOTS), the first node
    meets the others (CLUSTER MEET), and each replica follows its master (CLUSTER
    REPLICATE). It returns once every node reports `cluster_state:ok`, every slot assigned,
    every node known and every replica in sync. Started again (same object, so the same
    ports), the nodes find each other through their `nodes.conf`. `stop()` stops every node.
    `masters` and `replicas_of(i)` are the nodes as formed (a failover changes the roles).

    Redis Cluster has only database 0; `url` is a `redis+cluster://` seed that
    `obol_core.redis.create_redis` turns into a cluster client.
    """

    def __init__(
        self,
        data_dir: Path,
        masters: int = 3,
        appendfsync: str = "always",
        *,
        replicas: int = 0,
        node_timeout_ms: int = 5000,
        tls: ServerTls | None = None,
        timeout: float = 30.0,
    ) -> None:
        if masters < 1:
            raise ValueError("a Redis Cluster needs at least one master")
        if replicas < 0:
            raise ValueError("replicas must be 0 or more")
        self.data_dir = Path(data_dir).resolve()
        self.timeout = timeout
        self.replicas = replicas
        self.tls = tls
        self.nodes: list[EmbeddedRedis] = []  # the masters first, then their replicas
        ports: list[int] = []
        for _ in range(masters * (1 + replicas)):
            ports.append(free_cluster_port(ports))
            self.nodes.append(
                EmbeddedRedis(
                    self.data_dir / f"node-{ports[-1]}",
                    ports[-1],
                    appendfsync,
                    cluster=True,
                    cluster_node_timeout_ms=node_timeout_ms,
                    tls=tls,
                    timeout=timeout,
                )
            )
        self.masters = self.nodes[:masters]

    def replicas_of(self, index: int) -> list[EmbeddedRedis]:
        """The replicas that master number `index` was formed with."""
        count = len(self.masters)
        return [self.nodes[count + index * self.replicas + r] for r in range(self.replicas)]

    @property
    def ports(self) -> list[int]:
        return [node.port for node in self.nodes]

    @property
    def pids(self) -> list[int]:
        return [node.pid for node in self.nodes if node.pid is not None]

    @property
    def url(self) -> str:
        """A cluster seed URL (the first node); the client discovers the others. With
        `tls`: `rediss+cluster://`, verifying every node against the CA."""
        if self.tls is None:
            return f"redis+cluster://{HOST}:{self.nodes[0].port}"
        query = self.tls.query("ssl_ca_certs", "ssl_certfile", "ssl_keyfile")
        return f"rediss+cluster://{HOST}:{self.nodes[0].port}?{query}"

    def slot_ranges(self) -> list[tuple[int, int]]:
        """Each master's slots, first to last inclusive, in the order of `masters`."""
        count = len(self.masters)
        bounds = [i * CLUSTER_SLOTS // count for i in range(count + 1)]
        return [(bounds[i], bounds[i + 1] - 1) for i in range(count)]

    def start(self) -> None:
        """Start every node, form the cluster if new, wait until it serves every slot."""
        import redis  # here: `obol` starts without loading the client it rarely needs

        try:
            for node in self.nodes:
                node.start()
            clients = [
                redis.Redis.from_url(node.url, socket_timeout=self.timeout) for node in self.nodes
            ]
            try:
                if all(self._cluster_info(c)["cluster_slots_assigned"] == "0" for c in clients):
                    self._form(clients)
                self._wait_until_ok(clients)
                self._wait_until_replicas_in_sync(clients)
            finally:
                for client in clients:
                    client.close()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop every node (each with SIGTERM, SIGKILL after the timeout)."""
        for node in reversed(self.nodes):
            node.stop()

    def _form(self, clients: list[redis.Redis]) -> None:
        ranges = self.slot_ranges()
        masters = clients[: len(self.masters)]
        for epoch, (client, (first, last)) in enumerate(zip(masters, ranges, strict=True), 1):
            # Distinct epochs up front, as redis-cli does: no collision to resolve later.
            client.cluster("SET-CONFIG-EPOCH", epoch)
            client.cluster("ADDSLOTS", *range(first, last + 1))
        for node in self.nodes[1:]:
            clients[0].cluster("MEET", HOST, node.port)
        if not self.replicas:
            return
        by_port = dict(zip(self.ports, clients, strict=True))
        for index, master in enumerate(masters):
            master_id = _text(master.cluster("MYID"))
            for replica in self.replicas_of(index):
                self._replicate(by_port[replica.port], master_id)

    def _replicate(self, replica: redis.Redis, master_id: str) -> None:
        """CLUSTER REPLICATE, once the replica has learnt of its master (gossip, after the
        MEETs)."""
        import redis as redis_module

        deadline = time.monotonic() + self.timeout
        while True:
            try:
                replica.cluster("REPLICATE", master_id)
                return
            except redis_module.ResponseError as err:
                if "Unknown node" not in str(err) or time.monotonic() > deadline:
                    raise
            time.sleep(0.05)

    def _wait_until_replicas_in_sync(self, clients: list[redis.Redis]) -> None:
        """Until every replica's link to its master is up and its first AOF is written."""
        deadline = time.monotonic() + self.timeout
        replicas = clients[len(self.masters) :]
        while True:
            # In sync, and done writing the AOF after the full sync (until then Redis
            # refuses to stop on SIGTERM).
            infos = [client.info("replication") | client.info("persistence") for client in replicas]
            if all(
                # A node formed as a replica may be a master since a failover.
                (info.get("role") == "master" or info.get("master_link_status") == "up")
                and info.get("aof_rewrite_in_progress") == 0
                and info.get("aof_rewrite_scheduled") == 0
                for info in infos
            ):
                return
            if time.monotonic() > deadline:
                raise EmbeddedServerError(
                    f"Redis Cluster replicas not in sync after {self.timeout:.0f}s",
                    self.nodes[0].log,
                )
            time.sleep(0.05)

    def _wait_until_ok(self, clients: list[redis.Redis]) -> None:
        wanted = {
            "cluster_state": "ok",
            "cluster_slots_assigned": str(CLUSTER_SLOTS),
            "cluster_slots_ok": str(CLUSTER_SLOTS),
            "cluster_known_nodes": str(len(self.nodes)),
        }
        deadline = time.monotonic() + self.timeout
        while True:
            infos = [self._cluster_info(client) for client in clients]
            if all(all(info.get(k) == v for k, v in wanted.items()) for info in infos):
                return
            for node in self.nodes:
                node.check_running()
            if time.monotonic() > deadline:
                states = ", ".join(
                    f"{node.port}: {info.get('cluster_state')} "
                    f"({info.get('cluster_known_nodes')} nodes known, "
                    f"{info.get('cluster_slots_ok')} slots ok)"
                    for node, info in zip(self.nodes, infos, strict=True)
                )
                raise EmbeddedServerError(
                    f"Redis Cluster not ready after {self.timeout:.0f}s: {states}",
                    self.nodes[0].log,
                )
            time.sleep(0.05)

    @staticmethod
    def _cluster_info(client: redis.Redis) -> dict[str, str]:
        raw = client.cluster("INFO")
        if isinstance(raw, dict):  # redis-py's reply parser already split it
            return {str(k): _text(v) for k, v in raw.items()}
        text = _text(raw)
        pairs = (line.split(":", 1) for line in text.splitlines() if ":" in line)
        return {key: value.strip() for key, value in pairs}

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


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
