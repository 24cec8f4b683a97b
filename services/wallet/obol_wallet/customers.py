"""Customers: the operator's end customers, stored in Postgres."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

import asyncpg

from obol_core.ids import new_id
from obol_core.postgres import Queryable

from .errors import ExternalIdTaken, UnknownCustomer, VersionConflict

_COLUMNS = (
    "customer_id, external_id, display_name, email, plan_id, metadata, created_at, updated_at,"
    " version"
)


@dataclass(frozen=True)
class NewCustomer:
    external_id: str
    display_name: str = ""
    email: str = ""
    plan_id: str = ""
    metadata: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Customer:
    customer_id: str
    external_id: str
    display_name: str
    email: str
    plan_id: str
    metadata: Mapping[str, str]
    created_at: datetime
    updated_at: datetime
    version: int


def _from_row(row: asyncpg.Record) -> Customer:
    return Customer(
        customer_id=row["customer_id"],
        external_id=row["external_id"],
        display_name=row["display_name"],
        email=row["email"],
        plan_id=row["plan_id"],
        metadata=json.loads(row["metadata"]),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        version=row["version"],
    )


async def create_customer(conn: Queryable, new: NewCustomer) -> Customer:
    try:
        row = await conn.fetchrow(
            f"""INSERT INTO customers (customer_id, external_id, display_name, email, plan_id,
                                       metadata)
                VALUES ($1, $2, $3, $4, $5, $6::jsonb)
                RETURNING {_COLUMNS}""",
            new_id("cus"),
            new.external_id,
            new.display_name,
            new.email,
            new.plan_id,
            json.dumps(dict(new.metadata)),
        )
    except asyncpg.UniqueViolationError as exc:
        raise ExternalIdTaken(
            f"a customer with external_id {new.external_id!r} already exists",
            metadata={"resource_type": "customer", "external_id": new.external_id},
        ) from exc
    assert row is not None
    return _from_row(row)


async def get_customer(conn: Queryable, customer_id: str) -> Customer:
    row = await conn.fetchrow(
        f"SELECT {_COLUMNS} FROM customers WHERE customer_id = $1", customer_id
    )
    if row is None:
        raise UnknownCustomer(f"no customer {customer_id!r}", metadata={"customer_id": customer_id})
    return _from_row(row)


async def get_customer_by_external_id(conn: Queryable, external_id: str) -> Customer:
    row = await conn.fetchrow(
        f"SELECT {_COLUMNS} FROM customers WHERE external_id = $1", external_id
    )
    if row is None:
        raise UnknownCustomer(
            f"no customer with external_id {external_id!r}", metadata={"external_id": external_id}
        )
    return _from_row(row)


async def list_customers(
    conn: Queryable, *, limit: int, after: str | None, plan_id: str = ""
) -> list[Customer]:
    """Customers in creation order (ids are ULIDs), `limit` of them after `after`."""
    rows = await conn.fetch(
        f"""SELECT {_COLUMNS} FROM customers
            WHERE ($1::text IS NULL OR customer_id > $1) AND ($2 = '' OR plan_id = $2)
            ORDER BY customer_id
            LIMIT $3""",
        after,
        plan_id,
        limit,
    )
    return [_from_row(row) for row in rows]


UPDATABLE_FIELDS = frozenset({"external_id", "display_name", "email", "plan_id", "metadata"})


async def update_customer(
    conn: Queryable,
    customer_id: str,
    changes: NewCustomer,
    fields: frozenset[str],
    *,
    expected_version: int | None = None,
) -> Customer:
    """Write `fields` of `changes` in one statement; with `expected_version`, only if the
    customer is still at that version (VersionConflict otherwise)."""
    unknown = fields - UPDATABLE_FIELDS
    if unknown:
        raise ValueError(f"not updatable: {sorted(unknown)}")
    try:
        row = await conn.fetchrow(
            f"""UPDATE customers SET
                    external_id  = CASE WHEN 'external_id'  = ANY($3) THEN $4 ELSE external_id END,
                    display_name = CASE WHEN 'display_name' = ANY($3) THEN $5 ELSE display_name END,
                    email        = CASE WHEN 'email'        = ANY($3) THEN $6 ELSE email END,
                    plan_id      = CASE WHEN 'plan_id'      = ANY($3) THEN $7 ELSE plan_id END,
                    metadata     = CASE WHEN 'metadata'     = ANY($3) THEN $8::jsonb
                                        ELSE metadata END,
                    updated_at = now(), version = version + 1
                WHERE customer_id = $1 AND ($2::bigint IS NULL OR version = $2)
                RETURNING {_COLUMNS}""",
            customer_id,
            expected_version,
            sorted(fields),
            changes.external_id,
            changes.display_name,
            changes.email,
            changes.plan_id,
            json.dumps(dict(changes.metadata)),
        )
    except asyncpg.UniqueViolationError as exc:
        raise ExternalIdTaken(
            f"a customer with external_id {changes.external_id!r} already exists",
            metadata={"resource_type": "customer", "external_id": changes.external_id},
        ) from exc
    if row is None:
        current = await get_customer(conn, customer_id)  # UnknownCustomer if it is gone
        raise VersionConflict(
            f"customer {customer_id} changed since it was read",
            metadata={
                "resource_type": "customer",
                "resource_id": customer_id,
                "etag": str(current.version),
            },
        )
    return _from_row(row)
