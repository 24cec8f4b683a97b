"""A Redis primary with one replica, both real (the bundled redis-server), per test: the
tests kill, stop and promote them."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

from obol_cli.embedded import EmbeddedRedis, free_port

SYNC_TIMEOUT_SECONDS = 30.0


@dataclass
class Replicated:
    primary: EmbeddedRedis
    replica: EmbeddedRedis

    def wait_in_sync(self) -> None:
        """Until the replica's link to the primary is up, it has the primary's writes and
        it has written its AOF after a full sync (Redis refuses SIGTERM until then)."""
        deadline = time.monotonic() + SYNC_TIMEOUT_SECONDS
        with (
            redis.Redis.from_url(self.primary.url) as primary,
            redis.Redis.from_url(self.replica.url) as replica,
        ):
            while True:
                info = primary.info("replication")
                link = info.get("slave0")
                persistence = replica.info("persistence")
                if (
                    isinstance(link, dict)
                    and link.get("state") == "online"
                    and link.get("offset") == info.get("master_repl_offset")
                    and persistence.get("aof_rewrite_in_progress") == 0
                    and persistence.get("aof_rewrite_scheduled") == 0
                ):
                    return
                if time.monotonic() > deadline:
                    raise TimeoutError(f"replica not in sync: {info}, {persistence}")
                time.sleep(0.02)

    def promote_replica(self) -> None:
        """What a failover does: the replica becomes a primary with the data it has."""
        with redis.Redis.from_url(self.replica.url) as replica:
            replica.execute_command("REPLICAOF", "NO", "ONE")


@pytest.fixture
def replicated(tmp_path: Path) -> Iterator[Replicated]:
    primary = EmbeddedRedis(tmp_path / "primary", free_port())
    with primary:
        replica = EmbeddedRedis(tmp_path / "replica", free_port(), replica_of=primary.port)
        with replica:
            pair = Replicated(primary, replica)
            pair.wait_in_sync()
            yield pair
