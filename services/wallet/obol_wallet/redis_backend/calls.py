"""Requests turned into script calls (keys, arguments, how to read the reply), validated.

Building a call does no I/O, so the backend can run one call or pipeline many. Every
wallet script gets the wallet's nine keys first (see lua/common.lua), then, for
mutations, the idempotency record's key and, for hold operations, the hold's record
(scripts with lua/top_up.lua: then the partition's two top-up keys, last); ARGV starts
with wallet id, now, entry id and, for mutations, request id, request hash and the
idempotency TTL.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Generic, TypeVar

from redis.typing import EncodableT

from obol_core.ids import new_id
from obol_core.redis import LuaScript

from ..errors import UnknownHold
from ..model import (
    DEFAULT_PRIORITY,
    AuthorizeRequest,
    AuthorizeResult,
    CaptureRequest,
    CaptureResult,
    ChargeRequest,
    DebitRequest,
    DebitResult,
    ExtendHoldRequest,
    ExtendHoldResult,
    GrantRequest,
    GrantResult,
    Idempotency,
    MutationResult,
    RefundRequest,
    SettingsRequest,
    VoidRequest,
    VoidResult,
)
from ..partitions import WalletKeys, keys_for, reversal_grant_id, wallet_of_hold
from . import validate
from .codec import (
    decode_authorize,
    decode_capture,
    decode_debit,
    decode_extend,
    decode_grant,
    decode_mutation,
    decode_void,
)
from .scripts import Scripts

ResultT = TypeVar("ResultT")

_KEY_CACHE_SIZE = 100_000


@dataclass(frozen=True)
class Call(Generic[ResultT]):
    """One script call and how to turn its `ok`/`replay` result into ResultT."""

    script: LuaScript
    keys: list[bytes]
    args: list[EncodableT]
    wallet_id: str
    decode: Callable[[str, bytes, bool], ResultT]
    context: Mapping[str, str]  # metadata for a refusal


class CallBuilder:
    def __init__(
        self, scripts: Scripts, *, partitions: int, idempotency_ttl_seconds: int, backlog_limit: int
    ) -> None:
        self.scripts = scripts
        self.partitions = partitions
        # Constant arguments and the wallets' keys are encoded once (the hot path packs
        # them for every call).
        self._ttl = str(idempotency_ttl_seconds).encode()
        self._backlog = str(backlog_limit).encode()
        self.keys_of: Callable[[str], WalletKeys] = functools.lru_cache(_KEY_CACHE_SIZE)(
            lambda wallet_id: keys_for(wallet_id, self.partitions)
        )
        self._wallet_keys: Callable[[str], tuple[bytes, ...]] = functools.lru_cache(
            _KEY_CACHE_SIZE
        )(self._build_wallet_keys)
        self._top_up_keys: Callable[[str], tuple[bytes, bytes]] = functools.lru_cache(
            _KEY_CACHE_SIZE
        )(self._build_top_up_keys)

    def _build_wallet_keys(self, wallet_id: str) -> tuple[bytes, ...]:
        k = self.keys_of(wallet_id)
        names = (
            k.wallet,
            k.grants,
            k.grant_queue,
            k.grants_pending,
            k.grants_expiring,
            k.holds_expiring,
            k.holds_open,
            k.ledger,
            k.due,
        )
        return tuple(name.encode() for name in names)

    def wallet_keys(self, wallet_id: str) -> list[bytes]:
        return list(self._wallet_keys(wallet_id))

    def top_up_keys(self, wallet_id: str) -> tuple[bytes, bytes]:
        """The partition's `topups` and `topup_due`: the last two keys of every script
        that includes lua/top_up.lua (the spends, grant, the top_up_* scripts)."""
        return self._top_up_keys(wallet_id)

    def _build_top_up_keys(self, wallet_id: str) -> tuple[bytes, bytes]:
        k = self.keys_of(wallet_id)
        return k.topups.encode(), k.topup_due.encode()

    def _mutation(
        self, wallet_id: str, idem: Idempotency, now_ms: int, entry_id: str
    ) -> tuple[list[bytes], list[EncodableT]]:
        validate.idempotency(idem)
        validate.time_ms(now_ms, "now_ms")
        validate.identifier(entry_id, "entry_id")
        request_key = self.keys_of(wallet_id).request(idem.request_id).encode()
        keys = [*self._wallet_keys(wallet_id), request_key]
        args: list[EncodableT] = [
            wallet_id,
            now_ms,
            entry_id,
            idem.request_id,
            idem.request_hash,
            self._ttl,
        ]
        return keys, args

    def _hold_key(self, wallet_id: str, hold_id: str) -> bytes:
        if wallet_of_hold(hold_id) != wallet_id:
            raise UnknownHold(f"hold {hold_id} is unknown", metadata={"hold_id": hold_id})
        return self.keys_of(wallet_id).hold(hold_id).encode()

    # ---- mutations ----

    def authorize(self, r: AuthorizeRequest) -> Call[AuthorizeResult]:
        validate.amount(r.amount, "amount")
        validate.duration_ms(r.ttl_ms, "ttl_ms")
        validate.time_ms(r.now_ms + r.ttl_ms, "ttl_ms")
        hold_key = self._hold_key(r.wallet_id, r.hold_id)
        script = self.scripts.authorize
        keys, args = self._mutation(r.wallet_id, r.idem, r.now_ms, r.entry_id)
        keys.append(hold_key)
        keys += self.top_up_keys(r.wallet_id)
        memo = validate.memo_json(r.memo, hold_id=r.hold_id)
        args += [self._backlog, r.hold_id, r.amount, r.ttl_ms, memo]
        context = {"wallet_id": r.wallet_id, "hold_id": r.hold_id, "request_id": r.idem.request_id}
        return Call(script, keys, args, r.wallet_id, decode_authorize, context)

    def capture(self, r: CaptureRequest) -> Call[CaptureResult]:
        validate.amount(r.amount, "amount")
        currency, cost = validate.cost(r.cost)
        hold_key = self._hold_key(r.wallet_id, r.hold_id)
        script = self.scripts.capture
        keys, args = self._mutation(r.wallet_id, r.idem, r.now_ms, r.entry_id)
        keys.append(hold_key)
        keys += self.top_up_keys(r.wallet_id)
        memo = validate.memo_json(r.memo, hold_id=r.hold_id)
        over = "1" if r.allow_overcapture else "0"
        args += [r.hold_id, r.amount, over, memo, currency, cost]
        args += [reversal_grant_id(r.wallet_id, r.entry_id), DEFAULT_PRIORITY]
        context = {"wallet_id": r.wallet_id, "hold_id": r.hold_id, "request_id": r.idem.request_id}
        return Call(script, keys, args, r.wallet_id, decode_capture, context)

    def debit(self, r: DebitRequest) -> Call[DebitResult]:
        validate.positive_amount(r.amount, "amount")
        currency, cost = validate.cost(r.cost)
        hold_key = self._hold_key(r.wallet_id, r.hold_id)
        script = self.scripts.debit
        keys, args = self._mutation(r.wallet_id, r.idem, r.now_ms, r.entry_id)
        keys.append(hold_key)
        keys += self.top_up_keys(r.wallet_id)
        memo = validate.memo_json(r.memo, hold_id=r.hold_id)
        args += [r.hold_id, r.amount, memo, currency, cost]
        context = {"wallet_id": r.wallet_id, "hold_id": r.hold_id, "request_id": r.idem.request_id}
        return Call(script, keys, args, r.wallet_id, decode_debit, context)

    def extend_hold(self, r: ExtendHoldRequest) -> Call[ExtendHoldResult]:
        validate.duration_ms(r.ttl_ms, "ttl_ms")
        validate.time_ms(r.now_ms + r.ttl_ms, "ttl_ms")
        validate.amount(r.increase_by, "increase_by")
        hold_key = self._hold_key(r.wallet_id, r.hold_id)
        script = self.scripts.extend
        keys, args = self._mutation(r.wallet_id, r.idem, r.now_ms, r.entry_id)
        keys.append(hold_key)
        memo = validate.memo_json({}, hold_id=r.hold_id, increase_by=str(r.increase_by))
        args += [r.hold_id, r.ttl_ms, r.increase_by, memo]
        context = {"wallet_id": r.wallet_id, "hold_id": r.hold_id, "request_id": r.idem.request_id}
        return Call(script, keys, args, r.wallet_id, decode_extend, context)

    def void(self, r: VoidRequest) -> Call[VoidResult]:
        hold_key = self._hold_key(r.wallet_id, r.hold_id)
        script = self.scripts.void
        keys, args = self._mutation(r.wallet_id, r.idem, r.now_ms, r.entry_id)
        keys.append(hold_key)
        args += [r.hold_id, validate.memo_json({}, hold_id=r.hold_id, reason="void")]
        context = {"wallet_id": r.wallet_id, "hold_id": r.hold_id, "request_id": r.idem.request_id}
        return Call(script, keys, args, r.wallet_id, decode_void, context)

    def charge(self, r: ChargeRequest) -> Call[CaptureResult]:
        validate.amount(r.amount, "amount")
        currency, cost = validate.cost(r.cost)
        script = self.scripts.charge
        keys, args = self._mutation(r.wallet_id, r.idem, r.now_ms, r.entry_id)
        keys += self.top_up_keys(r.wallet_id)
        args += [self._backlog, r.amount, validate.memo_json(r.memo), currency, cost]
        context = {"wallet_id": r.wallet_id, "request_id": r.idem.request_id}
        return Call(script, keys, args, r.wallet_id, decode_capture, context)

    def grant(self, r: GrantRequest) -> Call[GrantResult]:
        validate.positive_amount(r.amount, "amount")
        validate.identifier(r.grant_id, "grant_id")
        validate.priority(r.priority)
        validate.time_ms(r.effective_ms, "effective_ms")
        validate.time_ms(r.expires_ms, "expires_ms")
        script = self.scripts.grant
        keys, args = self._mutation(r.wallet_id, r.idem, r.now_ms, r.entry_id)
        keys += self.top_up_keys(r.wallet_id)
        args += [
            self._backlog,
            r.grant_id,
            r.kind.value,
            r.amount,
            r.priority,
            r.effective_ms,
            r.expires_ms,
            validate.memo_json(r.memo),
            r.top_up_attempt,
        ]
        context = {
            "wallet_id": r.wallet_id,
            "grant_id": r.grant_id,
            "request_id": r.idem.request_id,
        }
        return Call(script, keys, args, r.wallet_id, decode_grant, context)

    def refund(self, r: RefundRequest) -> Call[MutationResult]:
        validate.positive_amount(r.amount, "amount")
        validate.identifier(r.grant_id, "grant_id")
        script = self.scripts.refund
        keys, args = self._mutation(r.wallet_id, r.idem, r.now_ms, r.entry_id)
        args += [r.grant_id, r.amount, validate.memo_json(r.memo)]
        context = {
            "wallet_id": r.wallet_id,
            "grant_id": r.grant_id,
            "request_id": r.idem.request_id,
        }
        return Call(script, keys, args, r.wallet_id, decode_mutation, context)

    def settings(self, r: SettingsRequest) -> Call[MutationResult]:
        frozen = "" if r.frozen is None else ("1" if r.frozen else "0")
        limit: EncodableT = ""
        if r.overdraft_limit is not None:
            limit = validate.amount(r.overdraft_limit, "overdraft_limit")
        script = self.scripts.settings
        keys, args = self._mutation(r.wallet_id, r.idem, r.now_ms, r.entry_id)
        args += [frozen, limit]
        context = {"wallet_id": r.wallet_id, "request_id": r.idem.request_id}
        return Call(script, keys, args, r.wallet_id, decode_mutation, context)

    def open(
        self, wallet_id: str, asset_code: str, overdraft_limit: int, now_ms: int
    ) -> tuple[list[bytes], list[EncodableT]]:
        validate.amount(overdraft_limit, "overdraft_limit")
        validate.time_ms(now_ms, "now_ms")
        args: list[EncodableT] = [wallet_id, now_ms, "", asset_code, overdraft_limit]
        return self.wallet_keys(wallet_id), args

    # ---- reads (they settle time first, so they may write) ----

    def read_args(self, wallet_id: str, now_ms: int, mode: str) -> list[EncodableT]:
        validate.time_ms(now_ms, "now_ms")
        return [wallet_id, now_ms, new_id("txn"), mode]

    def hold_read(
        self, wallet_id: str, hold_id: str, now_ms: int
    ) -> tuple[list[bytes], list[EncodableT]]:
        hold_key = self._hold_key(wallet_id, hold_id)
        validate.time_ms(now_ms, "now_ms")
        args: list[EncodableT] = [wallet_id, now_ms, new_id("txn"), hold_id]
        return [*self._wallet_keys(wallet_id), hold_key], args
