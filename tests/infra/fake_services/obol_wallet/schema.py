"""Fake wallet schema, for `obol migrate` tests."""

from pathlib import Path

SCHEMA = "fakewallet"
MIGRATIONS_DIR = Path(__file__).parent / "migrations"
