"""Resource identifiers: `<prefix>_<ULID>`.

ULIDs sort by creation time (useful for pagination and ledger ordering) and need no
coordination between replicas.
"""

from __future__ import annotations

import secrets
import time

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def new_ulid(now_ms: int | None = None) -> str:
    """A 26-character ULID: 48 bits of milliseconds, then 80 random bits."""
    millis = time.time_ns() // 1_000_000 if now_ms is None else now_ms
    value = (millis << 80) | secrets.randbits(80)
    chars = []
    for _ in range(26):
        chars.append(_CROCKFORD[value & 31])
        value >>= 5
    return "".join(reversed(chars))


def new_id(prefix: str) -> str:
    """A new identifier such as `cus_01JD3...`."""
    return f"{prefix}_{new_ulid()}"
