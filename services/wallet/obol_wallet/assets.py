"""Assets: currencies (9 decimals, nanos) and custom units with an exchange rate."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from obol_core.money import RoundingMode
from obol_core.postgres import Queryable
from obol_core.unit_price import UnitPrice

from .errors import ExternalIdTaken, UnknownAsset


class AssetKind(enum.Enum):
    CURRENCY = "currency"
    CUSTOM_UNIT = "custom_unit"


@dataclass(frozen=True)
class Asset:
    asset_code: str
    kind: AssetKind
    display_name: str
    decimals: int
    display_decimals: int
    symbol: str
    exchange_rate: UnitPrice | None  # custom units: currency amount per `per_quantity` units
    exchange_rounding: RoundingMode | None
    created_at: datetime | None = None


_COLUMNS = (
    "asset_code, kind, display_name, decimals, display_decimals, symbol, exchange_asset,"
    " exchange_amount, exchange_per_quantity, exchange_rounding, created_at"
)


def _from_row(row: asyncpg.Record) -> Asset:
    rate = None
    if row["exchange_asset"] is not None:
        rate = UnitPrice(
            row["exchange_asset"], row["exchange_amount"], row["exchange_per_quantity"]
        )
    rounding = RoundingMode(row["exchange_rounding"]) if row["exchange_rounding"] else None
    return Asset(
        asset_code=row["asset_code"],
        kind=AssetKind(row["kind"]),
        display_name=row["display_name"],
        decimals=row["decimals"],
        display_decimals=row["display_decimals"],
        symbol=row["symbol"],
        exchange_rate=rate,
        exchange_rounding=rounding,
        created_at=row["created_at"],
    )


async def create_asset(conn: Queryable, asset: Asset) -> Asset:
    rate = asset.exchange_rate
    try:
        row = await conn.fetchrow(
            f"""INSERT INTO assets (asset_code, kind, display_name, decimals, display_decimals,
                                    symbol, exchange_asset, exchange_amount,
                                    exchange_per_quantity, exchange_rounding)
                VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
                RETURNING {_COLUMNS}""",
            asset.asset_code,
            asset.kind.value,
            asset.display_name,
            asset.decimals,
            asset.display_decimals,
            asset.symbol,
            rate.asset_code if rate else None,
            rate.amount if rate else None,
            rate.per_quantity if rate else None,
            asset.exchange_rounding.value if asset.exchange_rounding else None,
        )
    except asyncpg.UniqueViolationError as exc:
        raise ExternalIdTaken(
            f"asset {asset.asset_code!r} already exists",
            metadata={"resource_type": "asset", "asset_code": asset.asset_code},
        ) from exc
    assert row is not None
    return _from_row(row)


async def get_asset(conn: Queryable, asset_code: str) -> Asset:
    row = await conn.fetchrow(f"SELECT {_COLUMNS} FROM assets WHERE asset_code = $1", asset_code)
    if row is None:
        raise UnknownAsset(f"no asset {asset_code!r}", metadata={"asset_code": asset_code})
    return _from_row(row)


async def list_assets(conn: Queryable, *, limit: int, after: str | None) -> list[Asset]:
    rows = await conn.fetch(
        f"""SELECT {_COLUMNS} FROM assets WHERE ($1::text IS NULL OR asset_code > $1)
            ORDER BY asset_code LIMIT $2""",
        after,
        limit,
    )
    return [_from_row(row) for row in rows]
