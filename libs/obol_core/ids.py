"""Resource identifiers: `<prefix>_<ULID>`.

ULIDs sort by creation time (useful for pagination and ledger ordering) and need no
coordination between replicas.
"""

from __future__ import annotations

import secrets
import time

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
# Two characters per 10 bits: a ULID's 130 bits (the top 2 always zero) are 13 lookups.
_PAIRS = [high + low for high in _CROCKFORD for low in _CROCKFORD]
_SHIFTS = tuple(range(120, -10, -10))


def new_ulid(now_ms: int | None = None) -> str:
    """A 26-character ULID: 48 bits of milliseconds, then 80 random bits."""
    millis = time.time_ns() // 1_000_000 if now_ms is None else now_ms
    value = (millis << 80) | secrets.randbits(80)
    return "".join([_PAIRS[(value >> shift) & 1023] for shift in _SHIFTS])


def new_id(prefix: str) -> str:
    """A new identifier such as `cus_01JD3...`."""
    return f"{prefix}_{new_ulid()}"
