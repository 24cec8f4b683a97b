"""Operator API keys: generation, hashing at rest, parsing, scopes and per-method policy.

A key is shown once, when generated (`obol_<random>`); Obol stores and configures only its
SHA-256 hex digest (`OBOL_API_KEYS=name:scope:digest,...`). Scopes are ordered:
admin > ingest > read, and a key satisfies every scope up to its own.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import IntEnum

API_KEY_PREFIX = "obol_"

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_DIGEST_RE = re.compile(r"^[0-9a-f]{64}$")

__all__ = [
    "API_KEY_PREFIX",
    "ApiKey",
    "KeyRing",
    "Scope",
    "ScopePolicy",
    "generate_api_key",
    "hash_api_key",
    "parse_api_keys",
]


class Scope(IntEnum):
    """What a key may do; a higher scope includes the lower ones."""

    READ = 1
    INGEST = 2
    ADMIN = 3

    @classmethod
    def parse(cls, text: str) -> Scope:
        try:
            return cls[text.strip().upper()]
        except KeyError:
            raise ValueError(f"unknown scope {text!r} (expected admin, ingest or read)") from None

    @property
    def label(self) -> str:
        return self.name.lower()


@dataclass(frozen=True)
class ApiKey:
    """A configured key: its display name, scope and the SHA-256 hex digest of the secret."""

    name: str
    scope: Scope
    digest: str

    def __post_init__(self) -> None:
        if not _NAME_RE.match(self.name):
            raise ValueError(f"invalid key name {self.name!r} (letters, digits, '_', '.', '-')")
        if not _DIGEST_RE.match(self.digest):
            raise ValueError(f"key {self.name!r}: digest must be 64 lowercase hex characters")


def generate_api_key() -> str:
    """A new random key (256 bits of entropy) with a recognisable prefix."""
    return API_KEY_PREFIX + secrets.token_urlsafe(32)


def hash_api_key(key: str) -> str:
    """The digest that is stored and configured in place of the key."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def parse_api_keys(text: str) -> tuple[ApiKey, ...]:
    """Parse `name:scope:sha256hex` entries separated by commas (blank entries ignored)."""
    keys: list[ApiKey] = []
    for position, raw in enumerate(text.split(","), start=1):
        entry = raw.strip()
        if not entry:
            continue
        parts = entry.split(":")
        if len(parts) != 3:
            raise ValueError(f"entry {position} must look like name:scope:sha256hex")
        name, scope, digest = (part.strip() for part in parts)
        keys.append(ApiKey(name=name, scope=Scope.parse(scope), digest=digest.lower()))
    names = [k.name for k in keys]
    if duplicates := sorted({n for n in names if names.count(n) > 1}):
        raise ValueError(f"duplicate key names: {', '.join(duplicates)}")
    if len({k.digest for k in keys}) != len(keys):
        raise ValueError("the same key digest is configured twice")
    return tuple(keys)


class KeyRing:
    """Looks presented keys up among the configured digests.

    The presented key is hashed and compared to every configured digest with
    `hmac.compare_digest`, without stopping at the first match, so timing reveals neither
    which digest matched nor how much of it.
    """

    def __init__(self, keys: Sequence[ApiKey]) -> None:
        self._keys = tuple(keys)

    def lookup(self, presented: str) -> ApiKey | None:
        digest = hash_api_key(presented).encode("ascii")
        found: ApiKey | None = None
        for key in self._keys:
            if hmac.compare_digest(digest, key.digest.encode("ascii")):
                found = key
        return found


_READ_VERBS = ("Get", "List", "Watch", "Evaluate", "Quote", "Simulate", "Rate", "Verify")
_INGEST_VERBS = (
    "Authorize",
    "Capture",
    "Void",
    "Charge",
    "Batch",
    "Meter",
    "RecordCost",
    "ExtendHold",
)


def _starts_with_word(method: str, verb: str) -> bool:
    """True when `verb` is a whole leading CamelCase word of `method` ("Rate" in "RateUsage",
    not in "Ratelimit")."""
    if not method.startswith(verb):
        return False
    rest = method[len(verb) :]
    return not rest or rest[0].isupper()


@dataclass(frozen=True)
class ScopePolicy:
    """The scope each RPC requires.

    Defaults follow the method's leading verb: reads (Get, List, Watch, Evaluate, Quote,
    Simulate, Rate, Verify) need `read`; the hot path (Authorize, Capture, Void, Charge,
    Batch*, Meter, RecordCost, ExtendHold) needs `ingest`; anything else needs `admin`.
    `overrides` maps full method names ("/obol.wallet.v1.WalletService/TopUp" or without
    the leading slash) to a scope.
    """

    overrides: Mapping[str, Scope] = field(default_factory=dict)
    # Each method's answer, worked out once (a service has a few dozen methods).
    _decided: dict[str, Scope] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        normalised = {"/" + name.lstrip("/"): scope for name, scope in self.overrides.items()}
        object.__setattr__(self, "overrides", normalised)

    def required_scope(self, full_method: str) -> Scope:
        scope = self._decided.get(full_method)
        if scope is None:
            scope = self._decided[full_method] = self._decide(full_method)
        return scope

    def _decide(self, full_method: str) -> Scope:
        if (scope := self.overrides.get(full_method)) is not None:
            return scope
        method = full_method.rsplit("/", 1)[-1]
        if any(_starts_with_word(method, verb) for verb in _READ_VERBS):
            return Scope.READ
        if any(_starts_with_word(method, verb) for verb in _INGEST_VERBS):
            return Scope.INGEST
        return Scope.ADMIN
