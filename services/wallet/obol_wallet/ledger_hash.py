"""The per-wallet hash chain over ledger entries.

`hash = sha256(prev_hash || canonical(entry))`, the first entry's prev_hash being 32 zero
bytes. The canonical form is a fixed, versioned text encoding of everything that gives an
entry its meaning (id, wallet, seq, kind, request, time, lines in order, memo sorted), so
editing any of it in Postgres breaks the chain from that entry on.
"""

from __future__ import annotations

import hashlib
import json

from .model import LedgerEntry

GENESIS_HASH = bytes(32)
_FORMAT = "obol.ledger.v1"


def canonical(entry: LedgerEntry) -> bytes:
    document = [
        _FORMAT,
        entry.entry_id,
        entry.wallet_id,
        str(entry.seq),
        entry.kind.value,
        entry.request_id,
        str(entry.occurred_ms),
        [[line.account, line.asset_code, str(line.amount)] for line in entry.lines],
        sorted(entry.memo.items()),
    ]
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode()


def chain_hash(prev_hash: bytes, entry: LedgerEntry) -> bytes:
    return hashlib.sha256(prev_hash + canonical(entry)).digest()
