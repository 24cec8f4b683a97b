"""Auto top-up on Redis: the rule's mirror, the worker's queue, failures and due retries.

The spends start attempts themselves, in their own Lua call (lua/top_up.lua). This module
runs the other top-up scripts and reads the queue for the top-up worker:

- `{pN}:topups` (stream) holds attempts to run and events to record; it is read with the
  consumer group `topups`. A message is XACKed and XDELed only once the worker has
  finished it, so a worker that died leaves it pending: its own pending messages are read
  again first, every round; another consumer's are taken over (XAUTOCLAIM) once they have
  been idle for the lease.
- `{pN}:topup_due` (zset) lists wallets to look at when a retry's backoff ends (or a rule
  was just set); lua/top_up_due.lua starts the attempt there if one is still needed.

If Redis loses its data under a running worker (a restart without AOF, a failover to an
empty replica, FLUSHALL), the groups go too and reads answer NOGROUP: `take` then creates
them again, from the start of the (new) streams, logs a warning and returns nothing for
that round. What the lost streams held is `obol rebuild`'s business (docs/decisions.md D13).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Sequence

import structlog
from redis.exceptions import ResponseError
from redis.typing import EncodableT

from obol_core.ids import new_id
from obol_core.redis import (
    LuaScript,
    RedisClient,
    StreamMessage,
    is_nogroup,
    read_group,
    run_scripts,
)

from ..model import (
    TopUpAttempt,
    TopUpDisabledReason,
    TopUpFailure,
    TopUpRule,
    TopUpStatus,
    WalletEvent,
    WalletEventKind,
)
from ..partitions import WalletKeys
from .calls import CallBuilder
from .refusals import refusal
from .scripts import Scripts

TOP_UP_GROUP = "topups"
"""The top-up workers' consumer group on every partition's `{pN}:topups` stream."""

# XACK then XDEL of one message, atomically: a finished message never lingers.
_DONE_SOURCE = """
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
return redis.call('XDEL', KEYS[1], ARGV[2])
"""


_log = structlog.get_logger("obol.wallet.auto_top_up")


def _work(partition: int, message: StreamMessage) -> TopUpAttempt | WalletEvent:
    """One `{pN}:topups` message (see lua/top_up.lua) as what the worker does with it."""
    message_id, raw = message
    fields = {key.decode(): value.decode() for key, value in raw.items()}
    token = f"{partition}/{message_id.decode()}"
    if fields["type"] == "attempt":
        return TopUpAttempt(
            attempt_id=fields["id"],
            wallet_id=fields["w"],
            asset_code=fields["asset"],
            amount=int(fields["amount"]),
            payment_method_id=fields["pm"],
            created_ms=int(fields["at"]),
            token=token,
        )
    return WalletEvent(
        event_id=fields.pop("id"),
        wallet_id=fields.pop("w"),
        kind=WalletEventKind(fields.pop("kind")),
        occurred_ms=int(fields.pop("at")),
        data={name: value for name, value in fields.items() if name != "type"},
        token=token,
    )


class RedisTopUps:
    """The top-up half of RedisBackend (it delegates here)."""

    def __init__(
        self,
        client: RedisClient,
        scripts: Scripts,
        calls: CallBuilder,
        partitions: int,
    ) -> None:
        self._client = client
        self._scripts = scripts
        self._calls = calls
        self._partitions = partitions
        self._done_script = LuaScript(client, _DONE_SOURCE)
        self._grouped = False
        self._next_claim = 0.0

    def _keys(self, wallet_id: str) -> list[bytes]:
        return [*self._calls.wallet_keys(wallet_id), *self._calls.top_up_keys(wallet_id)]

    def _streams(self) -> list[str]:
        return [WalletKeys(p, "").topups for p in range(self._partitions)]

    @functools.cached_property
    def _partition_of(self) -> dict[bytes, int]:
        return {key.encode(): p for p, key in enumerate(self._streams())}

    async def mirror(self, rule: TopUpRule) -> None:
        """Make the wallet's hash follow the stored rule (if this version is newer)."""
        args: list[EncodableT] = [
            rule.wallet_id,
            rule.updated_ms,
            "",
            rule.version,
            "0" if rule.deleted else "1",
            "1" if rule.enabled else "0",
            rule.disabled_reason.value,
            rule.threshold,
            rule.amount,
            rule.top_up_to,
            rule.payment_method_id,
            rule.max_failures,
            rule.consecutive_failures,
            rule.next_attempt_ms,
        ]
        reply = await self._scripts.top_up_rule(self._keys(rule.wallet_id), args)
        if reply[0] != b"ok":
            raise refusal(reply, {"wallet_id": rule.wallet_id})

    async def fail(self, failure: TopUpFailure) -> TopUpStatus:
        attempt = failure.attempt
        args: list[EncodableT] = [
            attempt.wallet_id,
            failure.now_ms,
            "",
            attempt.attempt_id,
            "1" if failure.method_invalid else "0",
            failure.retry_base_ms,
            failure.retry_max_ms,
            failure.error,
        ]
        reply = await self._scripts.top_up_fail(self._keys(attempt.wallet_id), args)
        if reply[0] != b"ok":
            raise refusal(reply, {"wallet_id": attempt.wallet_id})
        recorded, failures, next_ms, enabled, why, version = (v.decode() for v in reply[1:])
        return TopUpStatus(
            recorded=recorded == "1",
            consecutive_failures=int(failures),
            next_attempt_ms=int(next_ms),
            enabled=enabled == "1",
            disabled_reason=TopUpDisabledReason(why),
            rule_version=int(version),
        )

    async def start_due(self, now_ms: int, limit: int) -> int:
        """Look at up to `limit` wallets whose top-up time came; returns attempts started."""
        async with self._client.pipeline(transaction=False) as pipe:
            for partition in range(self._partitions):
                due = WalletKeys(partition, "").topup_due  # a partition-wide key: no wallet
                pipe.zrangebyscore(due, "-inf", now_ms, start=0, num=limit)
            listed = await pipe.execute()
        wallet_ids = [w.decode() for members in listed for w in members][:limit]
        replies = await run_scripts(
            self._client,
            [
                (self._scripts.top_up_due, self._keys(w), [w, now_ms, new_id("txn")])
                for w in wallet_ids
            ],
        )
        return sum(1 for reply in replies if reply[0] == b"ok" and reply[1] == b"1")

    async def take(
        self, consumer: str, limit: int, lease_ms: int
    ) -> list[TopUpAttempt | WalletEvent]:
        """The consumer's unfinished messages, then new ones (up to `limit` per partition
        each); messages another consumer left idle for `lease_ms` are taken over first."""
        streams = self._streams()
        await self._create_groups(streams)
        try:
            return await self._take(streams, consumer, limit, lease_ms)
        except ResponseError as err:
            if not is_nogroup(err):
                raise
            await self._regroup(streams, consumer, err)
            return []

    async def _regroup(self, streams: Sequence[str], consumer: str, err: ResponseError) -> None:
        """A group is gone: Redis lost its data. Create the groups again from id 0 (the
        streams are new: all they hold is unread). What a failed read delivered is this
        consumer's pending messages, read first next round; finishing an item taken before
        the loss is harmless (XACK of a missing group answers 0)."""
        self._grouped = False
        created = await self._create_groups(streams)
        _log.warning(
            "top-up consumer group lost (did Redis lose its data?); recreated",
            partitions=created,
            consumer=consumer,
            error=str(err),
        )

    async def _take(
        self, streams: Sequence[str], consumer: str, limit: int, lease_ms: int
    ) -> list[TopUpAttempt | WalletEvent]:
        if time.monotonic() >= self._next_claim:
            async with self._client.pipeline(transaction=False) as pipe:
                for key in streams:
                    pipe.xautoclaim(key, TOP_UP_GROUP, consumer, lease_ms, "0-0", count=limit)
                await pipe.execute()
            self._next_claim = time.monotonic() + lease_ms / 2000
        work: list[TopUpAttempt | WalletEvent] = []
        for start in ("0", ">"):  # own pending (unfinished) messages first
            wanted = dict.fromkeys(streams, start)
            replies = await read_group(self._client, TOP_UP_GROUP, consumer, wanted, count=limit)
            for stream, messages in replies:
                work += [_work(self._partition_of[stream], m) for m in messages if m[1]]
        return work

    async def done(self, token: str) -> None:
        """The worker finished this message: acknowledge and delete it."""
        partition, _, message_id = token.partition("/")
        key = WalletKeys(int(partition), "").topups
        await self._done_script([key], [TOP_UP_GROUP, message_id])

    async def _create_groups(self, streams: Sequence[str]) -> list[int]:
        """The groups (from the start of each stream) where missing; returns the partitions
        whose group this created."""
        if self._grouped:
            return []
        created: list[int] = []
        for partition, key in enumerate(streams):
            try:
                await self._client.xgroup_create(key, TOP_UP_GROUP, id="0", mkstream=True)
                created.append(partition)
            except ResponseError as err:
                if "BUSYGROUP" not in str(err):
                    raise
        self._grouped = True
        return created
