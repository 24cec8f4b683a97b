import hashlib

import pytest

from obol_core.apikeys import (
    API_KEY_PREFIX,
    ApiKey,
    KeyRing,
    Scope,
    ScopePolicy,
    generate_api_key,
    hash_api_key,
)


def test_generated_keys_are_prefixed_random_and_hashable() -> None:
    first, second = generate_api_key(), generate_api_key()
    assert first.startswith(API_KEY_PREFIX)
    assert first != second
    assert len(first) > 40
    assert hash_api_key(first) == hashlib.sha256(first.encode()).hexdigest()


def test_key_ring_lookup() -> None:
    secret = generate_api_key()
    ring = KeyRing(
        [
            ApiKey("reader", Scope.READ, hash_api_key("other")),
            ApiKey("ops", Scope.ADMIN, hash_api_key(secret)),
        ]
    )
    found = ring.lookup(secret)
    assert found is not None
    assert found.name == "ops"
    assert ring.lookup(secret + "x") is None
    assert ring.lookup("") is None


def test_scopes_are_ordered() -> None:
    assert Scope.ADMIN > Scope.INGEST > Scope.READ
    assert Scope.parse(" Ingest ") is Scope.INGEST
    with pytest.raises(ValueError, match="unknown scope"):
        Scope.parse("root")


@pytest.mark.parametrize(
    ("method", "scope"),
    [
        ("GetWallet", Scope.READ),
        ("ListEntries", Scope.READ),
        ("WatchBalance", Scope.READ),
        ("Evaluate", Scope.READ),
        ("QuoteUsage", Scope.READ),
        ("SimulatePriceBook", Scope.READ),
        ("RateUsage", Scope.READ),
        ("VerifyWebhook", Scope.READ),
        ("Authorize", Scope.INGEST),
        ("Capture", Scope.INGEST),
        ("Void", Scope.INGEST),
        ("Charge", Scope.INGEST),
        ("BatchAuthorize", Scope.INGEST),
        ("BatchCapture", Scope.INGEST),
        ("MeterEvents", Scope.INGEST),
        ("RecordCost", Scope.INGEST),
        ("RecordCosts", Scope.ADMIN),
        ("ExtendHold", Scope.INGEST),
        ("TopUp", Scope.ADMIN),
        ("CreatePriceBook", Scope.ADMIN),
        ("Getaway", Scope.ADMIN),
        ("Ratelimit", Scope.ADMIN),
    ],
)
def test_default_scope_by_verb(method: str, scope: Scope) -> None:
    assert ScopePolicy().required_scope(f"/obol.x.v1.XService/{method}") is scope


def test_overrides_by_full_method_name() -> None:
    policy = ScopePolicy(
        {
            "obol.wallet.v1.WalletService/TopUp": Scope.INGEST,
            "/obol.wallet.v1.WalletService/GetSecrets": Scope.ADMIN,
        }
    )
    assert policy.required_scope("/obol.wallet.v1.WalletService/TopUp") is Scope.INGEST
    assert policy.required_scope("/obol.wallet.v1.WalletService/GetSecrets") is Scope.ADMIN
    assert policy.required_scope("/obol.wallet.v1.WalletService/GetWallet") is Scope.READ
