"""`obol import` as a user runs it: a subprocess streaming a file to a running wallet."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

from ..grpc.harness import USD
from .conftest import CREDITS, ImportApi
from .rows import DOLLAR, available, customer, customer_count

GOOD_CSV = """\
external_id,display_name,email,metadata,asset_code,opening_balance,grant_external_id,expire_time
acme,Acme,billing@acme.example,"{""tier"": ""gold""}",USD,12.50,,
globex,"Globex
Corporation",,,credits,10.25,open-2026,2028-01-01T00:00:00Z
initech,Initech,,,,,,
"""

BAD_CSV = """\
external_id,email,asset_code,opening_balance
good,good@example.com,USD,1
,nobody@example.com,,
bad-email,not-an-email,,
negative,,USD,-5.00
precise,,credits,1.005
unknown,,NOPE,1
good,,USD,2
"""


async def obol(*args: str) -> tuple[int, str, str]:
    """Run `obol ARGS...`; its exit status, stdout and stderr."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "obol_cli",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    assert process.returncode is not None
    assert b"Traceback" not in err, err.decode()
    return process.returncode, out.decode(), err.decode()


def _bad_lines(stdout: str) -> list[str]:
    return [line for line in stdout.splitlines() if line.startswith("line ")]


async def test_csv_import_then_reimport(importing: ImportApi, tmp_path: Path) -> None:
    path = tmp_path / "customers.csv"
    path.write_text(GOOD_CSV, encoding="utf-8-sig")  # with a BOM, as spreadsheets write it
    code, out, _ = await obol("import", str(path), "--target", importing.target)
    assert code == 0, out
    assert "rows: 3 read, 0 bad" in out
    assert "customers created: 3, updated: 0, unchanged: 0" in out
    assert "wallets created: 2" in out and "grants created: 2" in out
    api = importing.api
    assert await available(api, "acme") == 12 * DOLLAR + DOLLAR // 2
    assert await available(api, "globex", CREDITS) == 1_025
    globex = await customer(api, "globex")
    assert globex.display_name == "Globex\nCorporation"
    assert dict((await customer(api, "acme")).metadata) == {"tier": "gold"}

    code, out, _ = await obol("import", str(path), "--target", importing.target)
    assert code == 0, out
    assert "customers created: 0, updated: 0, unchanged: 3" in out
    assert "grants created: 0" in out
    assert await available(api, "acme") == 12 * DOLLAR + DOLLAR // 2
    assert await available(api, "globex", CREDITS) == 1_025


async def test_csv_dry_run_changes_nothing(importing: ImportApi, tmp_path: Path) -> None:
    path = tmp_path / "customers.csv"
    path.write_text(GOOD_CSV)
    code, out, _ = await obol("import", str(path), "--dry-run", "--target", importing.target)
    assert code == 0, out
    assert "customers would be created: 3" in out
    assert "dry run: nothing was written" in out
    assert await customer_count(importing.api) == 0


async def test_csv_bad_rows_are_listed_by_line_and_column(
    importing: ImportApi, tmp_path: Path
) -> None:
    path = tmp_path / "customers.csv"
    path.write_text(BAD_CSV)
    code, out, _ = await obol("import", str(path), "--target", importing.target)
    assert code == 1
    assert "rows: 7 read, 6 bad" in out
    bad = _bad_lines(out)
    assert [line.split(":")[:2] for line in bad] == [
        ["line 3", " external_id"],
        ["line 4", " email"],
        ["line 5", " opening_balance"],
        ["line 6", " opening_balance"],
        ["line 7", " asset_code"],
        ["line 8", " external_id"],
    ]
    assert "line 6: opening_balance: '1.005' has more than 2 decimal places" in bad
    assert "line 7: asset_code: no asset 'NOPE'" in bad
    assert "line 8: external_id: external_id 'good' is already in this import, on line 2" in bad
    assert await customer_count(importing.api) == 1
    assert await available(importing.api, "good") == DOLLAR


async def test_jsonl_import(importing: ImportApi, tmp_path: Path) -> None:
    good = {
        "customer": {"externalId": "acme", "displayName": "Acme"},
        "wallets": [
            {
                "assetCode": USD,
                "grants": [
                    {
                        "externalId": "paid",
                        "kind": "GRANT_KIND_PURCHASED",
                        "amount": {"assetCode": USD, "amount": str(3 * DOLLAR)},
                    },
                    {
                        "externalId": "promo",
                        "kind": "GRANT_KIND_PROMOTIONAL",
                        "amount": {"assetCode": USD, "amount": str(DOLLAR)},
                    },
                ],
            },
            {"assetCode": CREDITS, "overdraftLimit": {"assetCode": CREDITS, "amount": "500"}},
        ],
    }
    bad_email = {"customer": {"externalId": "globex", "email": "not-an-email"}}
    path = tmp_path / "customers.jsonl"
    path.write_text(f"{json.dumps(good)}\n\n{{not json\n{json.dumps(bad_email)}\n")
    code, out, _ = await obol("import", str(path), "--target", importing.target)
    assert code == 1
    assert "customers created: 1" in out
    assert "wallets created: 2" in out and "grants created: 2" in out
    bad = _bad_lines(out)
    assert [line.split(":")[:2] for line in bad] == [
        ["line 3", " row"],
        ["line 4", " customer.email"],
    ]
    assert await available(importing.api, "acme") == 4 * DOLLAR
    assert await available(importing.api, "acme", CREDITS) == 500


async def test_an_unknown_csv_column_stops_before_anything_is_sent(
    importing: ImportApi, tmp_path: Path
) -> None:
    path = tmp_path / "customers.csv"
    path.write_text("external_id,emial\nacme,billing@acme.example\n")
    code, _, err = await obol("import", str(path), "--target", importing.target)
    assert code == 1
    assert "bad CSV header: unknown columns ['emial']" in err
    assert await customer_count(importing.api) == 0
