"""Opaque page tokens for List methods (AIP-158).

A token carries the sort key of the last item returned; it is base64url JSON so it stays
opaque to clients yet cheap to decode. A token that does not decode is the client's
mistake: INVALID_ARGUMENT naming `page_token`.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Sequence
from typing import TypeVar

from .errors import InvalidArgument

T = TypeVar("T")

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000


def page_size(requested: int) -> int:
    """0 means the default; anything above the maximum is capped (AIP-158)."""
    if requested <= 0:
        return DEFAULT_PAGE_SIZE
    return min(requested, MAX_PAGE_SIZE)


def encode_page_token(last_key: str) -> str:
    raw = json.dumps({"after": last_key}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_page_token(token: str) -> str | None:
    """The key to continue after, or None for the first page."""
    if not token:
        return None
    try:
        padded = token + "=" * (-len(token) % 4)
        decoded = json.loads(base64.urlsafe_b64decode(padded.encode()))
        after = decoded["after"]
    except (binascii.Error, ValueError, KeyError, TypeError) as err:
        raise InvalidArgument.for_field("page_token", "is not a token this API issued") from err
    if not isinstance(after, str):
        raise InvalidArgument.for_field("page_token", "is not a token this API issued")
    return after


def split_page(rows: Sequence[T], limit: int, key: Callable[[T], str]) -> tuple[list[T], str]:
    """Rows fetched with LIMIT limit+1 -> (this page, next_page_token or "")."""
    if len(rows) > limit:
        return list(rows[:limit]), encode_page_token(key(rows[limit - 1]))
    return list(rows), ""
