"""Meters: the usage event types the price books price, stored in Postgres."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from obol_core.postgres import Queryable

from .errors import ResourceAlreadyExists, ResourceNotFound

_COLUMNS = (
    "meter_id, product_id, event_type, display_name, description, quantity_keys,"
    " dimension_keys, created_at"
)


@dataclass(frozen=True)
class MeterSpec:
    meter_id: str
    product_id: str
    event_type: str
    display_name: str
    description: str
    quantity_keys: Sequence[str]
    dimension_keys: Sequence[str]


@dataclass(frozen=True)
class Meter(MeterSpec):
    created_at: datetime


def _from_row(row: asyncpg.Record) -> Meter:
    return Meter(
        meter_id=row["meter_id"],
        product_id=row["product_id"],
        event_type=row["event_type"],
        display_name=row["display_name"],
        description=row["description"],
        quantity_keys=tuple(row["quantity_keys"]),
        dimension_keys=tuple(row["dimension_keys"]),
        created_at=row["created_at"],
    )


async def create_meter(conn: Queryable, spec: MeterSpec) -> Meter:
    try:
        row = await conn.fetchrow(
            f"""INSERT INTO meters (meter_id, product_id, event_type, display_name, description,
                                    quantity_keys, dimension_keys)
                VALUES ($1, $2, $3, $4, $5, $6, $7)
                RETURNING {_COLUMNS}""",
            spec.meter_id,
            spec.product_id,
            spec.event_type,
            spec.display_name,
            spec.description,
            list(spec.quantity_keys),
            list(spec.dimension_keys),
        )
    except asyncpg.UniqueViolationError as exc:
        raise ResourceAlreadyExists(
            f"a meter with id {spec.meter_id!r} or event_type {spec.event_type!r} exists",
            metadata={
                "resource_type": "meter",
                "meter_id": spec.meter_id,
                "event_type": spec.event_type,
            },
        ) from exc
    assert row is not None
    return _from_row(row)


async def get_meter(conn: Queryable, meter_id: str) -> Meter:
    row = await conn.fetchrow(f"SELECT {_COLUMNS} FROM meters WHERE meter_id = $1", meter_id)
    if row is None:
        raise ResourceNotFound(
            f"no meter {meter_id!r}", metadata={"resource_type": "meter", "meter_id": meter_id}
        )
    return _from_row(row)


async def list_meters(
    conn: Queryable, *, limit: int, after: str | None, product_id: str = ""
) -> list[Meter]:
    rows = await conn.fetch(
        f"""SELECT {_COLUMNS} FROM meters
            WHERE ($1::text IS NULL OR meter_id > $1) AND ($2 = '' OR product_id = $2)
            ORDER BY meter_id
            LIMIT $3""",
        after,
        product_id,
        limit,
    )
    return [_from_row(row) for row in rows]
