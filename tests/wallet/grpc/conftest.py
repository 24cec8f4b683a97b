from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from .harness import WalletApi, wallet_api


@pytest.fixture(params=["redis", "postgres"])
async def api(
    request: pytest.FixtureRequest, fresh_database: str, redis_url: str
) -> AsyncIterator[WalletApi]:
    async with wallet_api(request.param, fresh_database, redis_url) as running:
        yield running


@pytest.fixture
async def redis_api(fresh_database: str, redis_url: str) -> AsyncIterator[WalletApi]:
    """The Redis backend only: for behaviour the Postgres baseline has no counterpart of."""
    async with wallet_api("redis", fresh_database, redis_url) as running:
        yield running
