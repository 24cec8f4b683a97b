"""ULIDs: 26 Crockford characters, 48 bits of milliseconds then 80 random bits."""

import re

from obol_core.ids import new_id, new_ulid

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def _decode(ulid: str) -> int:
    value = 0
    for char in ulid:
        value = value * 32 + _CROCKFORD.index(char)
    return value


def test_ulid_encodes_the_time_then_randomness() -> None:
    for now_ms in (0, 1, 1_790_000_000_123, 2**48 - 1):
        ulid = new_ulid(now_ms)
        assert re.fullmatch(r"[0-7][0-9A-HJKMNP-TV-Z]{25}", ulid), ulid
        assert _decode(ulid) >> 80 == now_ms


def test_ulids_sort_by_time_and_differ_within_a_millisecond() -> None:
    same_ms = {new_ulid(1_790_000_000_000) for _ in range(1000)}
    assert len(same_ms) == 1000
    assert new_ulid(1_790_000_000_000) < new_ulid(1_790_000_000_001)


def test_new_id_prefixes_a_ulid() -> None:
    identifier = new_id("hold")
    prefix, ulid = identifier.split("_")
    assert prefix == "hold" and len(ulid) == 26
