"""Redis clients (single node or Cluster), Lua scripts that survive NOSCRIPT, readiness.

Replies are bytes (`decode_responses=False`): amounts come back as integers or bytes and
are converted explicitly, never guessed.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, TypeAlias, TypeVar, cast

import hiredis
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.client import Pipeline
from redis.asyncio.cluster import ClusterNode, ClusterPipeline, RedisCluster
from redis.asyncio.connection import AbstractConnection
from redis.connection import HiredisRespSerializer
from redis.exceptions import MovedError, NoScriptError, RedisClusterException, ResponseError
from redis.typing import EncodableT, KeyT, StreamIdT

from .errors import Unavailable
from .settings import env_bool

__all__ = [
    "LuaScript",
    "RedisClient",
    "ReplicaAcks",
    "ReplicationUnconfirmed",
    "ScriptCall",
    "StreamMessage",
    "check_redis",
    "create_redis",
    "is_cluster_url",
    "is_nogroup",
    "read_group",
    "run_scripts",
]

RedisClient: TypeAlias = Redis | RedisCluster

_CLUSTER_SUFFIX = "+cluster"


def is_cluster_url(url: str) -> bool:
    """Whether `url` names a Redis Cluster by its scheme (`redis+cluster://`,
    `rediss+cluster://`); `OBOL_REDIS_CLUSTER` can also select a cluster for `redis://`."""
    scheme, separator, _ = url.partition("://")
    return bool(separator) and scheme.endswith(_CLUSTER_SUFFIX)


def create_redis(
    url: str,
    *,
    cluster: bool | None = None,
    socket_timeout_seconds: float = 5.0,
    health_check_interval_seconds: float = 30.0,
    max_connections: int = 64,
) -> RedisClient:
    """A client for `url`; a Redis Cluster client when the scheme is `redis+cluster://` /
    `rediss+cluster://` (rewritten to `redis://` / `rediss://`) or `cluster` is true
    (`None`: as `OBOL_REDIS_CLUSTER` says, i.e. `CommonSettings.redis_cluster`).

    Connections are made lazily, on first command. At most `max_connections` are open (per
    node, on a cluster); when all are busy, commands wait for one instead of failing.
    """
    scheme, separator, rest = url.partition("://")
    if not separator:
        raise ValueError(f"not a Redis URL: {url!r}")
    if cluster is None:
        cluster = env_bool("OBOL_REDIS_CLUSTER", False)
    if is_cluster_url(url):
        cluster = True
        url = f"{scheme.removesuffix(_CLUSTER_SUFFIX)}://{rest}"
    if cluster:
        return _WaitingRedisCluster.from_url(
            url,
            max_connections=max_connections,
            decode_responses=False,
            health_check_interval=health_check_interval_seconds,
            socket_timeout=socket_timeout_seconds,
            socket_connect_timeout=socket_timeout_seconds,
            socket_keepalive=True,
        )
    # A pool that waits for a free connection when all are busy: the default pool raises
    # MaxConnectionsError instead, which a burst of concurrent RPCs would turn into INTERNAL.
    pool = BlockingConnectionPool.from_url(
        url,
        max_connections=max_connections,
        timeout=socket_timeout_seconds,
        decode_responses=False,
        health_check_interval=health_check_interval_seconds,
        socket_timeout=socket_timeout_seconds,
        socket_connect_timeout=socket_timeout_seconds,
        socket_keepalive=True,
    )
    pool.connection_class = _packing_with_hiredis(pool.connection_class)
    return Redis(connection_pool=pool)


# The cluster client whose gate the running task holds (see _WaitingRedisCluster).
_gate_holder: ContextVar[RedisCluster | None] = ContextVar("obol_redis_gate", default=None)


class _WaitingRedisCluster(RedisCluster):
    """A RedisCluster whose commands wait for a free connection when all are busy.

    redis-py's asyncio cluster client has no blocking pool: a node whose `max_connections`
    connections are all in use fails the next command with MaxConnectionsError at once
    (redis/redis-py#3135), which a burst of concurrent RPCs (or a gather over many
    partitions) would turn into errors. Here at most `max_connections` commands and
    pipelines are in flight on the whole client, each using at most one connection per
    node, so no node's pool of that size runs out; the others wait their turn, as on a
    single node. A command issued while its task already holds the gate (a pipeline
    retrying a redirected command) goes through without waiting again.
    """

    def __init__(self, *, max_connections: int = 100, **kwargs: Any) -> None:
        super().__init__(max_connections=max_connections, **kwargs)
        self._obol_gate = asyncio.Semaphore(max_connections)
        # Pack with hiredis as the single-node client does: the nodes made so far, and
        # those discovered later (made from this same connection_kwargs dict).
        packing = _packing_with_hiredis(self.connection_kwargs["connection_class"])
        self.connection_kwargs["connection_class"] = packing
        for node in self.startup_nodes:
            node.connection_class = packing

    @asynccontextmanager
    async def gated(self) -> AsyncIterator[None]:
        if _gate_holder.get() is self:
            yield
            return
        async with self._obol_gate:
            token = _gate_holder.set(self)
            try:
                yield
            finally:
                _gate_holder.reset(token)

    async def execute_command(self, *args: EncodableT, **kwargs: Any) -> Any:
        async with self.gated():
            return await super().execute_command(*args, **kwargs)

    def pipeline(
        self, transaction: Any | None = None, shard_hint: Any | None = None
    ) -> ClusterPipeline:
        if shard_hint:  # as RedisCluster.pipeline
            raise RedisClusterException("shard_hint is deprecated in cluster mode")
        # mypy sees an abstract attribute that RedisCluster.pipeline's own ClusterPipeline
        # has just the same (redis-py sets it at run time).
        return _WaitingClusterPipeline(self, transaction)  # type: ignore[abstract]


class _WaitingClusterPipeline(ClusterPipeline):
    """A cluster pipeline that runs under its client's gate."""

    def __init__(self, client: _WaitingRedisCluster, transaction: bool | None = None) -> None:
        super().__init__(client, transaction)
        self._waiting_client = client

    async def execute(
        self, raise_on_error: bool = True, allow_redirections: bool = True
    ) -> list[Any]:
        async with self._waiting_client.gated():
            return await super().execute(raise_on_error, allow_redirections)


class _HiredisPacking(AbstractConnection):
    """Packs commands with hiredis (C) instead of redis-py's asyncio packer (Python), as
    redis-py's synchronous client already does: about 10x less CPU per command, which is
    most of what a pipelined batch of EVALSHAs with 25 arguments each costs the service."""

    _serializer: Any = HiredisRespSerializer()  # typed `pack(*args: List)` upstream

    def pack_command(self, *args: EncodableT) -> list[bytes]:
        # Straight to hiredis (str, bytes, int and float it packs as redis-py's serializer
        # would); the serializer, which first walks every argument in Python, only for a
        # multi-word command name ("CLIENT KILL") or arguments hiredis refuses (bytearray).
        name = args[0]
        one_word = (isinstance(name, str) and " " not in name) or (
            isinstance(name, bytes) and b" " not in name
        )
        if one_word:
            try:
                return [hiredis.pack_command(cast(Any, args))]
            except TypeError:
                pass
        packed: list[bytes] = self._serializer.pack(*args)
        return packed


_PACKING_CLASSES: dict[type[AbstractConnection], type[AbstractConnection]] = {}
_ConnectionT = TypeVar("_ConnectionT", bound=AbstractConnection)


def _packing_with_hiredis(connection_class: type[_ConnectionT]) -> type[_ConnectionT]:
    """`connection_class` (TCP, TLS or Unix socket, as the URL chose) packing with hiredis."""
    packing = _PACKING_CLASSES.get(connection_class)
    if packing is None:
        name = f"HiredisPacking{connection_class.__name__}"
        packing = type(name, (_HiredisPacking, connection_class), {})
        _PACKING_CLASSES[connection_class] = packing
    return cast(type[_ConnectionT], packing)


async def check_redis(client: RedisClient, *, timeout_seconds: float = 2.0) -> None:
    """Readiness: Redis answers PING within the timeout."""
    async with asyncio.timeout(timeout_seconds):
        await client.ping()


def is_nogroup(err: BaseException) -> bool:
    """Whether `err` is Redis's NOGROUP reply: XREADGROUP or XAUTOCLAIM named a consumer group
    (or a stream) that does not exist, as after Redis lost its data (a restart without AOF, a
    failover to an empty replica, FLUSHALL) under a worker that had created its group. Also
    when the reply comes back from a pipeline, which prefixes the message with the command.
    (XACK answers 0 for a missing group or stream instead: nothing to acknowledge.)"""
    return isinstance(err, ResponseError) and "NOGROUP" in str(err)


@dataclass(frozen=True)
class ReplicaAcks:
    """Answer a script call only once `replicas` replicas of its Redis primary have its
    writes (WAIT), waiting at most `timeout_ms`.

    Replication is asynchronous: without this, a primary that fails over right after
    answering may hand its slots to a replica that never received the write, and an
    acknowledged change is gone. With it, an answered write is on the primary's AOF and
    on `replicas` replicas (which Redis Cluster prefers when it elects a new primary).
    """

    replicas: int
    timeout_ms: int

    def __post_init__(self) -> None:
        if self.replicas < 1:
            raise ValueError("replicas must be at least 1 (no acknowledgement: None)")
        if self.timeout_ms < 1:
            raise ValueError("timeout_ms must be at least 1 (WAIT 0 would wait forever)")


class ReplicationUnconfirmed(Unavailable):
    """The calls ran on the primary, but fewer replicas than required confirmed them in
    time. Nothing is acknowledged; retrying the same requests (idempotent by request id)
    answers them once the replicas have caught up."""

    reason = "REPLICATION_UNCONFIRMED"


class LuaScript:
    """A Lua script run with EVALSHA.

    redis-py's `AsyncScript` (behind `register_script`) catches NOSCRIPT (the script cache
    was flushed, Redis restarted or failed over) and reloads the script before retrying
    once; retrying is safe because a NOSCRIPT reply means nothing ran. With `replica_acks`
    every call goes through `run_scripts`, which also waits for the replicas.
    """

    def __init__(
        self, client: RedisClient, source: str, *, replica_acks: ReplicaAcks | None = None
    ) -> None:
        self._client = client
        self._source = source
        self._script = client.register_script(source)
        self.replica_acks = replica_acks

    @property
    def sha(self) -> str:
        return self._script.sha

    async def load(self) -> None:
        """Load the script now (at startup) so that a syntax error fails fast."""
        self._script.sha = await self._client.script_load(self._source)

    async def __call__(self, keys: Sequence[KeyT], args: Sequence[EncodableT] = ()) -> Any:
        """Run the script; the reply is as Redis returns it (ints, bytes, nested lists)."""
        if self.replica_acks is not None:
            return (await run_scripts(self._client, [(self, keys, args)]))[0]
        return await self._script(keys=keys, args=args)


ScriptCall: TypeAlias = tuple[LuaScript, Sequence[KeyT], Sequence[EncodableT]]


async def run_scripts(client: RedisClient, calls: Sequence[ScriptCall]) -> list[Any]:
    """The replies of many script calls, in order, in one round trip (a pipeline; on a
    cluster, one per node, each call routed by its keys' slot).

    Calls refused with NOSCRIPT (nothing ran) are retried once after loading their scripts;
    any other error reply is raised (the calls that did run have run: the wallet's scripts
    are idempotent by request id, so a caller may retry them all). When a call's script
    has `replica_acks`, the replicas must confirm (see `_queue_acks`), else
    `ReplicationUnconfirmed`.
    """
    acks = _strongest_acks(calls)
    replies: list[Any] = [None] * len(calls)
    todo = list(range(len(calls)))
    for attempt in range(2):
        if not todo:
            break
        try:
            async with client.pipeline(transaction=False) as pipe:
                for i in todo:
                    script, keys, args = calls[i]
                    # As a plain command: redis-py refuses pipe.evalsha on a cluster
                    # pipeline, but routes EVALSHA by its keys' slot like any command.
                    pipe.execute_command("EVALSHA", script.sha, len(keys), *keys, *args)
                if acks is None:
                    answers = await pipe.execute(raise_on_error=False)
                else:
                    _queue_acks(client, pipe, [calls[i] for i in todo], acks)
                    answers = await _execute_unredirected(pipe)
        except RedisClusterException as err:
            if acks is None:
                raise
            # redis-py retried the whole pipeline after a node failed, and a WAIT lost the
            # node it was addressed to: the topology changed under the calls.
            raise _unconfirmed(acks, 0, "the Redis Cluster changed during the call") from err
        missing = []
        for i, answer in zip(todo, answers, strict=False):
            if isinstance(answer, NoScriptError) and attempt == 0:
                missing.append(i)
            elif isinstance(answer, Exception):
                if isinstance(answer, MovedError) and isinstance(client, RedisCluster):
                    await client.nodes_manager.initialize()  # so that a retry goes right
                raise answer
            else:
                replies[i] = answer
        if acks is not None:
            _check_confirmed(answers[len(todo) :], acks)
        for script in {calls[i][0] for i in missing}:
            await script.load()
        todo = missing
    return replies


def _strongest_acks(calls: Sequence[ScriptCall]) -> ReplicaAcks | None:
    wanted = [c[0].replica_acks for c in calls if c[0].replica_acks is not None]
    if not wanted:
        return None
    return ReplicaAcks(max(a.replicas for a in wanted), max(a.timeout_ms for a in wanted))


def _queue_acks(
    client: RedisClient, pipe: Any, calls: Sequence[ScriptCall], acks: ReplicaAcks
) -> None:
    """After the calls, on each primary they went to: a write to a fence key in one of
    their slots, then WAIT, both on the pipelined connection of the calls.

    WAIT confirms the writes its own connection made. The fence makes that cover whatever
    the calls saw, too: a replay answers from a record another connection wrote, maybe
    not yet replicated. On a cluster WAIT has no key, so it is addressed to the node.
    """
    wait = ("WAIT", acks.replicas, acks.timeout_ms)
    if not isinstance(client, RedisCluster):
        pipe.execute_command("SET", _fence_key(calls[0][1][0]), b"1")
        pipe.execute_command(*wait)
        return
    fences: dict[str, tuple[ClusterNode, bytes]] = {}
    for _, keys, _ in calls:
        node = client.nodes_manager.get_node_from_slot(client.keyslot(keys[0]))
        fences.setdefault(node.name, (node, _fence_key(keys[0])))
    for node, fence in fences.values():
        pipe.execute_command("SET", fence, b"1")
        pipe.execute_command(*wait, target_nodes=node)


async def _execute_unredirected(pipe: Pipeline | ClusterPipeline) -> list[Any]:
    """Run a pipeline whose writes WAITs must cover. On a cluster, redis-py would follow a
    MOVED/ASK/TRYAGAIN by sending the call again on another connection (or node) than its
    WAIT's; here such a call comes back as that error instead, having run nowhere."""
    if isinstance(pipe, ClusterPipeline):
        return await pipe.execute(raise_on_error=False, allow_redirections=False)
    return await pipe.execute(raise_on_error=False)


def _fence_key(key: KeyT) -> bytes:
    """A key in `key`'s hash slot: `{<its hash tag, else itself>}:replica_fence`."""
    raw = key.encode() if isinstance(key, str) else bytes(key)
    start = raw.find(b"{")
    end = raw.find(b"}", start + 1)
    tag = raw[start + 1 : end] if 0 <= start < end - 1 else raw
    return b"{" + tag + b"}:replica_fence"


def _check_confirmed(answers: Sequence[Any], acks: ReplicaAcks) -> None:
    """The fences and WAITs answered, every WAIT with enough replicas."""
    for answer in answers:
        if isinstance(answer, Exception):
            raise answer
    for confirmed in answers[1::2]:
        if int(confirmed) < acks.replicas:
            raise _unconfirmed(acks, int(confirmed), f"within {acks.timeout_ms} ms")


def _unconfirmed(acks: ReplicaAcks, confirmed: int, why: str) -> ReplicationUnconfirmed:
    return ReplicationUnconfirmed(
        f"the change was applied on the Redis primary, but {confirmed} of {acks.replicas} "
        f"required replicas confirmed it ({why}); retry with the same request_id",
        metadata={
            "dependency": "redis",
            "confirmed_replicas": confirmed,
            "required_replicas": acks.replicas,
        },
        retry_delay_seconds=1.0,
    )


StreamMessage: TypeAlias = tuple[bytes, dict[bytes, bytes]]


async def read_group(
    client: RedisClient,
    group: str,
    consumer: str,
    streams: Mapping[str, str],
    *,
    count: int,
    block_ms: int | None = None,
) -> list[tuple[bytes, list[StreamMessage]]]:
    """XREADGROUP over several streams: [(stream key, messages)] of those that answered.

    On a single node one command names them all (blocking up to `block_ms` when given). On
    a cluster, where a command names keys of one slot, each stream gets its own, all in
    one pipeline (one round trip per node), never blocking: the caller waits instead.
    """
    replies: list[Any]
    if isinstance(client, RedisCluster):
        async with client.pipeline(transaction=False) as pipe:
            for key, ident in streams.items():
                pipe.xreadgroup(group, consumer, {key: ident}, count=count)
            replies = await pipe.execute()
    else:
        wanted: dict[KeyT, StreamIdT] = {key: ident for key, ident in streams.items()}
        replies = [await client.xreadgroup(group, consumer, wanted, count=count, block=block_ms)]
    return [(key, list(messages)) for reply in replies for key, messages in reply or []]
