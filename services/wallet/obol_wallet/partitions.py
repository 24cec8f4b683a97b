"""Wallet partitions and the Redis key names of a wallet (see docs/wallet.md).

Every key of one wallet carries the hash tag `{p<N>}` of its partition, as does the
partition's ledger stream, so each Lua call touches exactly one Redis Cluster slot.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

DEFAULT_PARTITIONS = 128
HOLD_PREFIX = "hld_"
GRANT_PREFIX = "grt_"
WALLET_PREFIX = "wal_"
_ULID_LENGTH = 26


def partition_of(wallet_id: str, partitions: int) -> int:
    return zlib.crc32(wallet_id.encode()) % partitions


def _child_id(prefix: str, wallet_id: str, ulid: str) -> str:
    return f"{prefix}{wallet_id.removeprefix(WALLET_PREFIX)}{ulid}"


def _wallet_of_child(prefix: str, child_id: str) -> str | None:
    body = child_id.removeprefix(prefix)
    if not child_id.startswith(prefix) or len(body) != 2 * _ULID_LENGTH:
        return None
    return WALLET_PREFIX + body[:_ULID_LENGTH]


def hold_id_for(wallet_id: str, hold_ulid: str) -> str:
    """A hold id that names its wallet, so Capture/Void find the wallet without a lookup."""
    return _child_id(HOLD_PREFIX, wallet_id, hold_ulid)


def wallet_of_hold(hold_id: str) -> str | None:
    """The wallet a hold id names, or None if it is not a hold id Obol issued."""
    return _wallet_of_child(HOLD_PREFIX, hold_id)


def grant_id_for(wallet_id: str, grant_ulid: str) -> str:
    """A grant id that names its wallet (RefundGrant takes only the grant id)."""
    return _child_id(GRANT_PREFIX, wallet_id, grant_ulid)


def wallet_of_grant(grant_id: str) -> str | None:
    return _wallet_of_child(GRANT_PREFIX, grant_id)


def reversal_grant_id(wallet_id: str, entry_id: str) -> str:
    """The grant that gives back what stream debits drew beyond a lower capture total:
    named after the capture's entry (`txn_<ULID>`), so both backends make the same id."""
    return grant_id_for(wallet_id, entry_id.rpartition("_")[2])


@dataclass(frozen=True)
class WalletKeys:
    partition: int
    wallet_id: str

    @property
    def tag(self) -> str:
        return f"{{p{self.partition}}}"

    @property
    def wallet(self) -> str:
        return f"{self.tag}:w:{self.wallet_id}"

    @property
    def grants(self) -> str:
        return f"{self.wallet}:g"

    @property
    def grant_queue(self) -> str:
        return f"{self.wallet}:gq"

    @property
    def grants_pending(self) -> str:
        return f"{self.wallet}:gp"

    @property
    def grants_expiring(self) -> str:
        return f"{self.wallet}:gx"

    @property
    def holds_expiring(self) -> str:
        return f"{self.wallet}:hx"

    @property
    def holds_open(self) -> str:
        """Hash of the wallet's open holds (hold id -> packed state), so that expiring a
        hold touches only declared wallet keys."""
        return f"{self.wallet}:ho"

    def hold(self, hold_id: str) -> str:
        return f"{self.tag}:h:{hold_id}"

    def request(self, request_id: str) -> str:
        return f"{self.tag}:i:{self.wallet_id}:{request_id}"

    @property
    def ledger(self) -> str:
        return f"{self.tag}:ledger"

    @property
    def due(self) -> str:
        return f"{self.tag}:due"

    @property
    def topups(self) -> str:
        """The partition's stream of auto top-up attempts and wallet events (the worker's)."""
        return f"{self.tag}:topups"

    @property
    def topup_due(self) -> str:
        """The partition's wallets with an auto top-up retry due, score = when (ms)."""
        return f"{self.tag}:topup_due"


def keys_for(wallet_id: str, partitions: int) -> WalletKeys:
    return WalletKeys(partition_of(wallet_id, partitions), wallet_id)
