"""Wallet identities in Postgres: one wallet per (customer, asset).

The money of a wallet lives in the backend (Redis hot state, or the Postgres baseline);
this module owns who the wallet belongs to and finds it from a selector.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, replace
from datetime import datetime

import asyncpg

from obol_core.money import Money, RoundingMode
from obol_core.postgres import Queryable
from obol_core.unit_price import UnitPrice

from .errors import AssetMismatch, ExternalIdTaken, UnknownCustomer, UnknownWallet


@dataclass(frozen=True)
class Exchange:
    """A custom unit's value in a currency: how its revenue is recognised."""

    rate: UnitPrice  # `amount` of the currency buys `per_quantity` atomic units
    rounding: RoundingMode

    def revenue(self, amount: int) -> Money:
        return Money(self.rate.asset_code, self.rate.price(amount, self.rounding))


@dataclass(frozen=True)
class WalletRecord:
    wallet_id: str
    customer_id: str
    asset_code: str
    partition: int
    created_at: datetime
    exchange: Exchange | None = None  # custom units only; set by WalletDirectory

    def revenue(self, amount: int) -> Money:
        """What `amount` of the wallet's asset is worth as revenue (currencies: itself)."""
        if self.exchange is None:
            return Money(self.asset_code, amount)
        return self.exchange.revenue(amount)


@dataclass(frozen=True)
class WalletSelector:
    """By wallet id, or by customer (Obol id or external id) plus asset."""

    wallet_id: str = ""
    customer_id: str = ""
    external_customer_id: str = ""
    asset_code: str = ""


_COLUMNS = "wallet_id, customer_id, asset_code, partition, created_at"


def _from_row(row: asyncpg.Record) -> WalletRecord:
    return WalletRecord(
        wallet_id=row["wallet_id"],
        customer_id=row["customer_id"],
        asset_code=row["asset_code"],
        partition=row["partition"],
        created_at=row["created_at"],
    )


async def insert_wallet(
    conn: Queryable,
    *,
    wallet_id: str,
    customer_id: str,
    asset_code: str,
    partition: int,
    overdraft_limit: int,
) -> WalletRecord:
    try:
        row = await conn.fetchrow(
            f"""INSERT INTO wallets (wallet_id, customer_id, asset_code, partition,
                                     overdraft_limit)
                VALUES ($1, $2, $3, $4, $5)
                RETURNING {_COLUMNS}""",
            wallet_id,
            customer_id,
            asset_code,
            partition,
            overdraft_limit,
        )
    except asyncpg.UniqueViolationError as exc:
        raise ExternalIdTaken(
            f"customer {customer_id!r} already has a {asset_code} wallet",
            metadata={
                "resource_type": "wallet",
                "customer_id": customer_id,
                "asset_code": asset_code,
            },
        ) from exc
    except asyncpg.ForeignKeyViolationError as exc:
        raise UnknownCustomer(
            f"no customer {customer_id!r}", metadata={"customer_id": customer_id}
        ) from exc
    assert row is not None
    return _from_row(row)


async def find_wallet(conn: Queryable, selector: WalletSelector) -> WalletRecord:
    if selector.wallet_id:
        row = await conn.fetchrow(
            f"SELECT {_COLUMNS} FROM wallets WHERE wallet_id = $1", selector.wallet_id
        )
        if row is None:
            raise UnknownWallet(
                f"no wallet {selector.wallet_id!r}", metadata={"wallet_id": selector.wallet_id}
            )
        found = _from_row(row)
        if selector.asset_code and selector.asset_code != found.asset_code:
            raise AssetMismatch(
                f"wallet {found.wallet_id} holds {found.asset_code}, not {selector.asset_code}",
                metadata={
                    "field": "wallet.asset_code",
                    "asset_code": selector.asset_code,
                    "expected_asset_code": found.asset_code,
                },
            )
        return found
    row = await conn.fetchrow(
        f"""SELECT {", ".join("w." + c for c in _COLUMNS.split(", "))}
            FROM wallets w JOIN customers c USING (customer_id)
            WHERE w.asset_code = $3
              AND (($1 <> '' AND c.customer_id = $1) OR ($2 <> '' AND c.external_id = $2))""",
        selector.customer_id,
        selector.external_customer_id,
        selector.asset_code,
    )
    if row is None:
        owner = selector.customer_id or selector.external_customer_id
        raise UnknownWallet(
            f"no {selector.asset_code} wallet for customer {owner!r}",
            metadata={"customer_id": owner, "asset_code": selector.asset_code},
        )
    return _from_row(row)


async def get_wallet_record(conn: Queryable, wallet_id: str) -> WalletRecord:
    return await find_wallet(conn, WalletSelector(wallet_id=wallet_id))


async def list_wallets(
    conn: Queryable,
    *,
    limit: int,
    after: str | None,
    customer_id: str = "",
    asset_code: str = "",
) -> list[WalletRecord]:
    rows = await conn.fetch(
        f"""SELECT {_COLUMNS} FROM wallets
            WHERE ($1::text IS NULL OR wallet_id > $1)
              AND ($2 = '' OR customer_id = $2) AND ($3 = '' OR asset_code = $3)
            ORDER BY wallet_id LIMIT $4""",
        after,
        customer_id,
        asset_code,
        limit,
    )
    return [_from_row(row) for row in rows]


class WalletDirectory:
    """Finds wallets, remembering what it found: a wallet's identity (id, customer, asset)
    never changes, so the hot path resolves a selector without a Postgres round trip after
    the first time. Bounded: the least recently used entries are forgotten first."""

    def __init__(self, pool: Queryable, *, capacity: int = 200_000) -> None:
        self._pool = pool
        self._capacity = capacity
        self._by_key: OrderedDict[tuple[str, str, str, str], WalletRecord] = OrderedDict()
        self._exchanges: dict[str, Exchange | None] = {}

    async def find(self, selector: WalletSelector) -> WalletRecord:
        key = (
            selector.wallet_id,
            selector.customer_id,
            selector.external_customer_id,
            selector.asset_code,
        )
        found = self._by_key.get(key)
        if found is not None:
            self._by_key.move_to_end(key)
            return found
        found = await find_wallet(self._pool, selector)
        found = replace(found, exchange=await self._exchange(found.asset_code))
        self._by_key[key] = found
        if len(self._by_key) > self._capacity:
            self._by_key.popitem(last=False)
        return found

    async def get(self, wallet_id: str) -> WalletRecord:
        return await self.find(WalletSelector(wallet_id=wallet_id))

    async def _exchange(self, asset_code: str) -> Exchange | None:
        """Assets are immutable, so each one's exchange rate is read once."""
        if asset_code not in self._exchanges:
            row = await self._pool.fetchrow(
                """SELECT exchange_asset, exchange_amount, exchange_per_quantity,
                          exchange_rounding
                   FROM assets WHERE asset_code = $1""",
                asset_code,
            )
            exchange = None
            if row is not None and row["exchange_asset"] is not None:
                exchange = Exchange(
                    UnitPrice(
                        row["exchange_asset"],
                        row["exchange_amount"],
                        row["exchange_per_quantity"],
                    ),
                    RoundingMode(row["exchange_rounding"]),
                )
            self._exchanges[asset_code] = exchange
        return self._exchanges[asset_code]
