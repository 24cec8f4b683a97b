"""Resource identifiers: `<prefix>_<ULID>`.

ULIDs sort by creation time (useful for pagination and ledger ordering) and need no
coordination between replicas.
"""

from __future__ import annotations

import base64
import secrets
import time

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_RFC4648_TO_CROCKFORD = bytes.maketrans(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", _CROCKFORD.encode())


def new_ulid(now_ms: int | None = None) -> str:
    """A 26-character ULID: 48 bits of milliseconds, then 80 random bits.

    The 128 bits are base32-encoded in C (RFC 4648, then mapped to Crockford's alphabet):
    as 20 bytes, the leading 32 zero bits are the first 6 characters plus 2 bits of the
    7th, which is exactly the ULID's first character (2 zero bits, 3 of the time).
    """
    millis = time.time_ns() // 1_000_000 if now_ms is None else now_ms
    value = (millis << 80) | secrets.randbits(80)
    encoded = base64.b32encode(value.to_bytes(20, "big"))[6:]
    return encoded.translate(_RFC4648_TO_CROCKFORD).decode()


def new_id(prefix: str) -> str:
    """A new identifier such as `cus_01JD3...`."""
    return f"{prefix}_{new_ulid()}"
