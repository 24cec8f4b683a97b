"""A test harness over RedisBackend: a controllable clock, request builders with fresh
ids, and checks of every invariant against raw Redis and the ledger stream."""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from obol_core.ids import new_id, new_ulid
from obol_core.redis import RedisClient
from obol_wallet.model import (
    AuthorizeRequest,
    AuthorizeResult,
    CaptureRequest,
    CaptureResult,
    ChargeRequest,
    CostRecord,
    GrantKind,
    GrantRequest,
    GrantResult,
    HoldState,
    Idempotency,
    MutationResult,
    RefundRequest,
    RequestRecord,
    SettingsRequest,
    VoidRequest,
    WalletSnapshot,
)
from obol_wallet.partitions import WalletKeys, hold_id_for, keys_for
from obol_wallet.redis_backend import RedisBackend
from obol_wallet.redis_backend.codec import GrantRow, HoldRow, StreamMessage, decode_message

START_MS = 1_800_000_000_000
PARTITIONS = 16
USD = "USD"


def new_wallet_id() -> str:
    return f"wal_{new_ulid()}"


def idem(request_id: str | None = None, payload: str = "") -> Idempotency:
    rid = request_id or f"req-{new_ulid()}"
    return Idempotency(rid, hashlib.sha256(f"{rid}|{payload}".encode()).hexdigest())


@dataclass
class Harness:
    client: RedisClient
    now: int = START_MS
    backlog_limit: int = 100_000
    backend: RedisBackend = field(init=False)

    def __post_init__(self) -> None:
        self.backend = self.make_backend()

    def make_backend(self, *, backlog_limit: int | None = None) -> RedisBackend:
        return RedisBackend(
            self.client,
            partitions=PARTITIONS,
            backlog_limit=self.backlog_limit if backlog_limit is None else backlog_limit,
        )

    def keys(self, wallet_id: str) -> WalletKeys:
        return keys_for(wallet_id, PARTITIONS)

    def advance(self, ms: int) -> None:
        self.now += ms

    # ---- request builders (fresh ids; now = the harness clock) ----

    def grant_request(
        self,
        wallet_id: str,
        amount: int,
        *,
        kind: GrantKind = GrantKind.PURCHASED,
        priority: int = 100,
        effective_ms: int | None = None,
        expires_ms: int = 0,
        request: Idempotency | None = None,
    ) -> GrantRequest:
        return GrantRequest(
            idem=request or idem(payload=f"grant{amount}"),
            wallet_id=wallet_id,
            grant_id=f"grt_{new_ulid()}",
            entry_id=new_id("txn"),
            kind=kind,
            amount=amount,
            priority=priority,
            effective_ms=self.now if effective_ms is None else effective_ms,
            expires_ms=expires_ms,
            now_ms=self.now,
            memo={"source": "test"},
        )

    def authorize_request(
        self,
        wallet_id: str,
        amount: int,
        *,
        ttl_ms: int = 60_000,
        request: Idempotency | None = None,
    ) -> AuthorizeRequest:
        return AuthorizeRequest(
            idem=request or idem(payload=f"authorize{amount}"),
            wallet_id=wallet_id,
            hold_id=hold_id_for(wallet_id, new_ulid()),
            entry_id=new_id("txn"),
            amount=amount,
            ttl_ms=ttl_ms,
            now_ms=self.now,
            memo={"model": "gpt-test"},
        )

    def capture_request(
        self,
        hold_id: str,
        amount: int,
        *,
        allow_overcapture: bool = False,
        cost: CostRecord | None = None,
        request: Idempotency | None = None,
    ) -> CaptureRequest:
        wallet_id = "wal_" + hold_id.removeprefix("hld_")[:26]
        return CaptureRequest(
            idem=request or idem(payload=f"capture{amount}"),
            wallet_id=wallet_id,
            hold_id=hold_id,
            entry_id=new_id("txn"),
            amount=amount,
            allow_overcapture=allow_overcapture,
            now_ms=self.now,
            cost=cost,
        )

    def void_request(self, hold_id: str, *, request: Idempotency | None = None) -> VoidRequest:
        return VoidRequest(
            idem=request or idem(payload="void"),
            wallet_id="wal_" + hold_id.removeprefix("hld_")[:26],
            hold_id=hold_id,
            entry_id=new_id("txn"),
            now_ms=self.now,
        )

    def charge_request(
        self, wallet_id: str, amount: int, *, request: Idempotency | None = None
    ) -> ChargeRequest:
        return ChargeRequest(
            idem=request or idem(payload=f"charge{amount}"),
            wallet_id=wallet_id,
            entry_id=new_id("txn"),
            amount=amount,
            now_ms=self.now,
            cost=CostRecord(USD, amount // 2),
        )

    # ---- operations ----

    async def wallet(
        self,
        funds: int = 0,
        *,
        overdraft_limit: int = 0,
        expires_ms: int = 0,
        kind: GrantKind = GrantKind.PURCHASED,
    ) -> str:
        wallet_id = new_wallet_id()
        await self.backend.open_wallet(wallet_id, USD, overdraft_limit, self.now)
        if funds:
            await self.backend.grant(
                self.grant_request(wallet_id, funds, expires_ms=expires_ms, kind=kind)
            )
        return wallet_id

    async def grant(self, wallet_id: str, amount: int, **options: object) -> GrantResult:
        return await self.backend.grant(self.grant_request(wallet_id, amount, **options))  # type: ignore[arg-type]

    async def authorize(
        self, wallet_id: str, amount: int, *, ttl_ms: int = 60_000
    ) -> AuthorizeResult:
        return await self.backend.authorize(
            self.authorize_request(wallet_id, amount, ttl_ms=ttl_ms)
        )

    async def capture(
        self,
        hold_id: str,
        amount: int,
        *,
        allow_overcapture: bool = False,
        cost: CostRecord | None = None,
    ) -> CaptureResult:
        return await self.backend.capture(
            self.capture_request(hold_id, amount, allow_overcapture=allow_overcapture, cost=cost)
        )

    async def void(self, hold_id: str) -> MutationResult:
        return await self.backend.void(self.void_request(hold_id))

    async def charge(self, wallet_id: str, amount: int) -> CaptureResult:
        return await self.backend.charge(self.charge_request(wallet_id, amount))

    async def refund(self, wallet_id: str, grant_id: str, amount: int) -> MutationResult:
        return await self.backend.refund(
            RefundRequest(
                idem=idem(payload=f"refund{amount}"),
                wallet_id=wallet_id,
                grant_id=grant_id,
                entry_id=new_id("txn"),
                amount=amount,
                now_ms=self.now,
            )
        )

    async def settings(
        self, wallet_id: str, *, frozen: bool | None = None, overdraft_limit: int | None = None
    ) -> MutationResult:
        return await self.backend.update_settings(
            SettingsRequest(
                idem=idem(payload=f"settings{frozen}{overdraft_limit}"),
                wallet_id=wallet_id,
                entry_id=new_id("txn"),
                now_ms=self.now,
                frozen=frozen,
                overdraft_limit=overdraft_limit,
            )
        )

    async def available(self, wallet_id: str) -> int:
        return (await self.backend.balance(wallet_id, self.now)).available

    # ---- the ledger stream ----

    async def messages(self, wallet_id: str) -> list[StreamMessage]:
        """Every stream message of the wallet, decoded, in stream order."""
        replies = await self.client.xrange(self.keys(wallet_id).ledger, "-", "+")
        decoded = [decode_message(fields) for _, fields in replies]
        return [m for m in decoded if m.wallet_id == wallet_id]

    async def check(self, wallet_id: str, *, allow_deficit: bool = False) -> None:
        """Every invariant of the wallet, on raw Redis and on its ledger stream."""
        await check_hot_state(self, wallet_id, allow_deficit=allow_deficit)
        check_ledger(wallet_id, await self.messages(wallet_id))


def entry_balances(message: StreamMessage) -> None:
    for entry in message.entries:
        sums: dict[str, int] = defaultdict(int)
        for line in entry.lines:
            sums[line.asset_code] += line.amount
        assert all(total == 0 for total in sums.values()), (entry.entry_id, entry.lines)


def check_ledger(wallet_id: str, messages: Sequence[StreamMessage]) -> None:
    """Entries balance per asset, seqs run 1, 2, 3..., versions grow, and the wallet's
    balance derived from its ledger lines equals its counters in the last message."""
    seqs = [entry.seq for m in messages for entry in m.entries]
    assert seqs == list(range(1, len(seqs) + 1))
    versions = [m.wallet.version for m in messages]
    assert versions == sorted(set(versions))
    accounts: dict[str, int] = defaultdict(int)
    for message in messages:
        entry_balances(message)
        for entry in message.entries:
            for line in entry.lines:
                accounts[line.account] += line.amount
    if not messages:
        return
    last = messages[-1].wallet
    assert last.seq == len(seqs)
    prefix = f"wallet:{wallet_id}:"
    funds = sum(v for k, v in accounts.items() if k.startswith(prefix + "grant:"))
    assert accounts.get(prefix + "overdraft", 0) == last.overdraft_used
    grants = latest_grants(messages)
    live = [row.grant for row in grants.values() if not row.expired and row.grant.remaining > 0]
    assert funds == sum(g.remaining for g in live)
    # Every call settles time first: grants effective by the last call's time are active.
    now = messages[-1].now_ms
    assert last.active == sum(g.remaining for g in live if g.effective_ms <= now)
    for grant_id, row in grants.items():
        assert accounts.get(prefix + "grant:" + grant_id, 0) == row.grant.remaining


def latest_grants(messages: Sequence[StreamMessage]) -> dict[str, GrantRow]:
    rows: dict[str, GrantRow] = {}
    for message in messages:
        for row in message.grants:
            rows[row.grant.grant_id] = row
    return rows


def latest_holds(messages: Sequence[StreamMessage]) -> dict[str, HoldRow]:
    rows: dict[str, HoldRow] = {}
    for message in messages:
        for row in message.holds:
            rows[row.hold.hold_id] = row
    return rows


def snapshot_from(messages: Sequence[StreamMessage]) -> WalletSnapshot:
    """What the write-behind would have put in Postgres, as a rebuild snapshot."""
    last = messages[-1].wallet
    requests = [m.request for m in messages if m.request is not None]
    return WalletSnapshot(
        wallet_id=last.wallet_id,
        asset_code=last.asset_code,
        overdraft_limit=last.overdraft_limit,
        overdraft_used=last.overdraft_used,
        frozen=last.frozen,
        seq=last.seq,
        version=last.version,
        grants=[
            row.grant
            for row in latest_grants(messages).values()
            if not row.expired and row.grant.remaining > 0
        ],
        open_holds=[
            row.hold for row in latest_holds(messages).values() if row.hold.state is HoldState.OPEN
        ],
        requests=[
            RequestRecord(r.request_id, r.request_hash, r.result, r.created_ms) for r in requests
        ],
    )


def _ints(raw: Mapping[bytes, bytes]) -> dict[str, str]:
    return {k.decode(): v.decode() for k, v in raw.items()}


async def check_hot_state(h: Harness, wallet_id: str, *, allow_deficit: bool = False) -> None:
    """The counters equal what the grant and hold structures say; THE invariant holds."""
    k = h.keys(wallet_id)
    w = _ints(await h.client.hgetall(k.wallet))
    assert w["hydrated"] == "1"
    grants = _ints(await h.client.hgetall(k.grants))
    queue = [m.decode() for m in await h.client.zrange(k.grant_queue, 0, -1)]
    pending = {m.decode() for m in await h.client.zrange(k.grants_pending, 0, -1)}
    queued = {member[36:] for member in queue}
    assert queued | pending == set(grants), "every live grant is queued or pending"
    assert not queued & pending
    active = sum(int(grants[g].split("|")[0]) for g in queued)
    assert all(int(grants[g].split("|")[0]) > 0 for g in grants), "no empty grant kept"
    assert int(w["active"]) == active
    holds = _ints(await h.client.hgetall(k.holds_open))
    expiring = {m.decode() for m in await h.client.zrange(k.holds_expiring, 0, -1)}
    assert expiring == set(holds)
    held = sum(int(v.split("|")[1]) - int(v.split("|")[2]) for v in holds.values())
    assert int(w["held"]) == held
    od, limit = int(w["od"]), int(w["limit"])
    assert -limit <= od <= 0
    assert od == 0 or active == 0, "a grant repays overdraft before it can be spent"
    if not allow_deficit:
        assert active + od - held + limit >= 0, "THE invariant: available >= 0"
