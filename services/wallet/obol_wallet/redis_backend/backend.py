"""RedisBackend: the wallet's hot path on Redis, one Lua call per mutation.

Each mutation is ONE EVALSHA: fail closed if the wallet is not hydrated, idempotency
check, settle time (pending grants activate, expired grants and holds leave through the
ledger), check, change, XADD of the one ledger message to the partition's stream,
idempotency record, PUBLISH of the balance. Redis runs scripts one at a time, so no two
calls interleave: there is no read-modify-write from Python and concurrent duplicates of
a request id cannot both apply. The scripts are in lua/ (common.lua explains the frame).

Batch APIs pipeline many calls in one round trip (not a transaction: each call is atomic
on its own, and a refused item is returned as its error).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from redis.typing import EncodableT

from obol_core.errors import ObolError
from obol_core.redis import RedisClient, ReplicaAcks, run_scripts

from ..model import (
    AuthorizeRequest,
    AuthorizeResult,
    Balance,
    CaptureRequest,
    CaptureResult,
    ChargeRequest,
    DebitRequest,
    DebitResult,
    ExtendHoldRequest,
    ExtendHoldResult,
    Grant,
    GrantRequest,
    GrantResult,
    Hold,
    HoldState,
    MutationResult,
    RefundRequest,
    SettingsRequest,
    TopUpAttempt,
    TopUpFailure,
    TopUpRule,
    TopUpStatus,
    VoidRequest,
    VoidResult,
    WalletEvent,
    WalletSnapshot,
)
from ..partitions import DEFAULT_PARTITIONS, WalletKeys, hold_id_for
from . import validate
from .calls import Call, CallBuilder
from .codec import decode_balance, decode_grant_record
from .refusals import refusal
from .scripts import Scripts
from .top_ups import RedisTopUps

ResultT = TypeVar("ResultT")
RequestT = TypeVar("RequestT")

DEFAULT_IDEMPOTENCY_TTL_SECONDS = 7 * 86400
DEFAULT_BACKLOG_LIMIT = 100_000
_HYDRATE_CHUNK = 500  # records per hydrate_records call

_OK, _REPLAY = b"ok", b"replay"


def _outcome(call: Call[ResultT], reply: Any) -> ResultT:
    status = reply[0]
    if status == _OK:
        return call.decode(call.wallet_id, reply[1], False)
    if status == _REPLAY:
        return call.decode(call.wallet_id, reply[1], True)
    raise refusal(reply, call.context)


def _check(reply: Any, context: Mapping[str, str]) -> None:
    if reply[0] != _OK:
        raise refusal(reply, context)


def _build_all(
    build: Callable[[RequestT], Call[ResultT]], requests: Sequence[RequestT]
) -> list[Call[ResultT] | ObolError]:
    """Each request's call, or the error that refused it before any script ran."""
    calls: list[Call[ResultT] | ObolError] = []
    for request in requests:
        try:
            calls.append(build(request))
        except ObolError as err:
            calls.append(err)
    return calls


class RedisBackend:
    """WalletBackend (and BatchingBackend) on Redis; see the module docstring."""

    def __init__(
        self,
        client: RedisClient,
        *,
        partitions: int = DEFAULT_PARTITIONS,
        idempotency_ttl_seconds: int = DEFAULT_IDEMPOTENCY_TTL_SECONDS,
        backlog_limit: int = DEFAULT_BACKLOG_LIMIT,
        replica_acks: ReplicaAcks | None = None,
    ) -> None:
        self._client = client
        self._scripts = Scripts(client, replica_acks=replica_acks)
        self._calls = CallBuilder(
            self._scripts,
            partitions=partitions,
            idempotency_ttl_seconds=idempotency_ttl_seconds,
            backlog_limit=backlog_limit,
        )
        self._partitions = partitions
        self._retention_ms = idempotency_ttl_seconds * 1000
        self._sweep_start = 0
        self._top_ups = RedisTopUps(client, self._scripts, self._calls, partitions)

    async def load_scripts(self) -> None:
        """Load every script now (startup), so that a broken script fails fast."""
        await self._scripts.load()

    # ---- running calls ----

    async def _run(self, call: Call[ResultT]) -> ResultT:
        return _outcome(call, await call.script(call.keys, call.args))

    async def _run_many(
        self, calls: Sequence[Call[ResultT] | ObolError]
    ) -> list[ResultT | ObolError]:
        runnable = [c for c in calls if isinstance(c, Call)]
        replies = iter(
            await run_scripts(self._client, [(c.script, c.keys, c.args) for c in runnable])
        )
        results: list[ResultT | ObolError] = []
        for call in calls:
            if isinstance(call, ObolError):
                results.append(call)
                continue
            try:
                results.append(_outcome(call, next(replies)))
            except ObolError as err:
                results.append(err)
        return results

    # ---- wallets ----

    async def open_wallet(
        self, wallet_id: str, asset_code: str, overdraft_limit: int, now_ms: int
    ) -> None:
        """Create the wallet's hot state (empty, hydrated) if absent. Idempotent; only for
        a new wallet: a wallet whose hot state was lost is rebuilt with hydrate()."""
        keys, args = self._calls.open(wallet_id, asset_code, overdraft_limit, now_ms)
        reply = await self._scripts.open(keys, args)
        _check(reply, {"wallet_id": wallet_id, "asset_code": asset_code})

    async def is_hydrated(self, wallet_id: str) -> bool:
        keys = self._calls.keys_of(wallet_id)
        return bool(await self._client.hexists(keys.wallet, "hydrated"))

    # ---- mutations ----

    async def grant(self, request: GrantRequest) -> GrantResult:
        return await self._run(self._calls.grant(request))

    async def refund(self, request: RefundRequest) -> MutationResult:
        return await self._run(self._calls.refund(request))

    async def authorize(self, request: AuthorizeRequest) -> AuthorizeResult:
        return await self._run(self._calls.authorize(request))

    async def capture(self, request: CaptureRequest) -> CaptureResult:
        return await self._run(self._calls.capture(request))

    async def void(self, request: VoidRequest) -> VoidResult:
        return await self._run(self._calls.void(request))

    async def debit(self, request: DebitRequest) -> DebitResult:
        return await self._run(self._calls.debit(request))

    async def extend_hold(self, request: ExtendHoldRequest) -> ExtendHoldResult:
        return await self._run(self._calls.extend_hold(request))

    async def charge(self, request: ChargeRequest) -> CaptureResult:
        return await self._run(self._calls.charge(request))

    async def update_settings(self, request: SettingsRequest) -> MutationResult:
        return await self._run(self._calls.settings(request))

    # ---- batches ----

    async def authorize_many(
        self, requests: Sequence[AuthorizeRequest]
    ) -> list[AuthorizeResult | ObolError]:
        return await self._run_many(_build_all(self._calls.authorize, requests))

    async def capture_many(
        self, requests: Sequence[CaptureRequest]
    ) -> list[CaptureResult | ObolError]:
        return await self._run_many(_build_all(self._calls.capture, requests))

    async def charge_many(
        self, requests: Sequence[ChargeRequest]
    ) -> list[CaptureResult | ObolError]:
        return await self._run_many(_build_all(self._calls.charge, requests))

    # ---- reads: they settle time first ----

    async def _read(self, wallet_id: str, now_ms: int, mode: str) -> Any:
        reply = await self._scripts.read(
            self._calls.wallet_keys(wallet_id), self._calls.read_args(wallet_id, now_ms, mode)
        )
        _check(reply, {"wallet_id": wallet_id})
        return reply

    async def balance(self, wallet_id: str, now_ms: int) -> Balance:
        reply = await self._read(wallet_id, now_ms, "balance")
        return decode_balance(wallet_id, json.loads(reply[1]))

    async def grants(self, wallet_id: str, now_ms: int) -> Sequence[Grant]:
        """The wallet's live grants in drawdown order: active ones, then pending ones by
        effective time. Exhausted and expired grants are no longer in Redis (Postgres)."""
        reply = await self._read(wallet_id, now_ms, "grants")
        pairs = reply[2:]
        return [
            decode_grant_record(wallet_id, pairs[i].decode(), pairs[i + 1])
            for i in range(0, len(pairs), 2)
        ]

    async def hold(self, wallet_id: str, hold_id: str, now_ms: int) -> Hold:
        keys, args = self._calls.hold_read(wallet_id, hold_id, now_ms)
        reply = await self._scripts.hold(keys, args)
        _check(reply, {"wallet_id": wallet_id, "hold_id": hold_id})
        state, authorized, debited, captured, expires, created, ttl = (
            v.decode() for v in reply[1:]
        )
        return Hold(
            hold_id=hold_id,
            wallet_id=wallet_id,
            state=HoldState(state),
            authorized=int(authorized),
            debited=int(debited),
            captured=int(captured),
            expires_ms=int(expires),
            created_ms=int(created),
            ttl_ms=int(ttl),
        )

    async def sweep(self, now_ms: int, limit: int) -> int:
        """Settle time for up to `limit` wallets listed as due in the partitions' `due`
        sets (starting from a rotating partition, so none starves); returns how many."""
        validate.time_ms(now_ms, "now_ms")
        if limit <= 0:
            return 0
        order = [(self._sweep_start + i) % self._partitions for i in range(self._partitions)]
        self._sweep_start = (self._sweep_start + 1) % self._partitions
        async with self._client.pipeline(transaction=False) as pipe:
            for partition in order:
                due = WalletKeys(partition, "").due  # a partition-wide key: no wallet
                pipe.zrangebyscore(due, "-inf", now_ms, start=0, num=limit)
            listed = await pipe.execute()
        wallet_ids = [w.decode() for members in listed for w in members][:limit]
        replies = await run_scripts(
            self._client,
            [
                (
                    self._scripts.read,
                    self._calls.wallet_keys(wallet_id),
                    self._calls.read_args(wallet_id, now_ms, "sweep"),
                )
                for wallet_id in wallet_ids
            ],
        )
        return sum(1 for reply in replies if reply[0] == _OK)

    # ---- auto top-up (top_ups.py) ----

    async def mirror_top_up_rule(self, rule: TopUpRule) -> None:
        await self._top_ups.mirror(rule)

    async def take_top_ups(
        self, consumer: str, now_ms: int, limit: int, lease_ms: int
    ) -> Sequence[TopUpAttempt | WalletEvent]:
        return await self._top_ups.take(consumer, limit, lease_ms)

    async def top_up_done(self, item: TopUpAttempt | WalletEvent) -> None:
        await self._top_ups.done(item.token)

    async def fail_top_up(self, failure: TopUpFailure) -> TopUpStatus:
        return await self._top_ups.fail(failure)

    async def start_due_top_ups(self, now_ms: int, limit: int) -> int:
        validate.time_ms(now_ms, "now_ms")
        return await self._top_ups.start_due(now_ms, limit)

    # ---- rebuild ----

    async def hydrate(self, snapshot: WalletSnapshot, *, now_ms: int | None = None) -> bool:
        """Load a wallet's hot state from a snapshot (Postgres plus unconsumed stream
        messages, see `obol rebuild`) if it is not hydrated; returns whether it loaded.

        Open holds' records and idempotency records (still within the retention at
        `now_ms`, default: the wall clock) go first; the wallet itself last, in one call
        that sets `hydrated`, so the wallet is served only once all of it is there."""
        now = time.time_ns() // 1_000_000 if now_ms is None else now_ms
        wallet_id = snapshot.wallet_id
        keys = self._calls.keys_of(wallet_id)
        holds = [h for h in snapshot.open_holds if h.state is HoldState.OPEN]
        # An open hold's record (see common.lua), kept until its expiry plus the retention.
        records: list[tuple[str, list[EncodableT]]] = [
            (
                keys.hold(h.hold_id),
                [
                    "h",
                    f"open|{h.authorized}|{h.debited}|0|{h.expires_ms}|{h.created_ms}||{h.ttl_ms}|",
                    h.expires_ms + self._retention_ms,
                ],
            )
            for h in holds
        ]
        for r in snapshot.requests:
            left_ms = r.created_ms + self._retention_ms - now
            if left_ms > 0:
                records.append(
                    (keys.request(r.request_id), ["i", f"{r.request_hash}|{r.result}", left_ms])
                )
        for start in range(0, len(records), _HYDRATE_CHUNK):
            chunk = records[start : start + _HYDRATE_CHUNK]
            loaded = await self._scripts.hydrate_records(
                [keys.wallet, *(key for key, _ in chunk)],
                [arg for _, args in chunk for arg in args],
            )
            if not loaded:
                return False
        return await self._hydrate_wallet(snapshot, holds, now)

    async def _hydrate_wallet(
        self, snapshot: WalletSnapshot, holds: Sequence[Hold], now_ms: int
    ) -> bool:
        grants = [g for g in snapshot.grants if g.remaining > 0]
        args: list[EncodableT] = [
            snapshot.wallet_id,
            now_ms,
            "",
            snapshot.asset_code,
            snapshot.overdraft_limit,
            snapshot.overdraft_used,
            "1" if snapshot.frozen else "0",
            snapshot.seq,
            snapshot.version,
            len(grants),
        ]
        for g in grants:
            args += [
                g.grant_id,
                g.remaining,
                g.amount,
                g.priority,
                g.effective_ms,
                g.expires_ms,
                g.kind.value,
                g.created_ms,
                g.refunded,
            ]
        args.append(len(holds))
        for h in holds:
            args += [
                h.hold_id,
                h.authorized,
                h.debited,
                h.expires_ms,
                h.created_ms,
                h.ttl_ms,
                "",
            ]
        reply = await self._scripts.hydrate(self._calls.wallet_keys(snapshot.wallet_id), args)
        return bool(reply[1] == b"1")

    async def drop_hot_state(self, wallet_id: str) -> None:
        """Delete everything Redis holds for the wallet (tests of fail-closed and rebuild).
        Not atomic and not for production traffic."""
        keys = self._calls.keys_of(wallet_id)
        await self._client.delete(
            keys.wallet,
            keys.grants,
            keys.grant_queue,
            keys.grants_pending,
            keys.grants_expiring,
            keys.holds_expiring,
            keys.holds_open,
        )
        await self._client.zrem(keys.due, wallet_id)
        # Idempotency records and hold records (open or closed: hold ids name the wallet).
        for pattern in (keys.request("*"), keys.hold(hold_id_for(wallet_id, "*"))):
            async for key in self._client.scan_iter(match=pattern, count=1000):
                await self._client.delete(key)
