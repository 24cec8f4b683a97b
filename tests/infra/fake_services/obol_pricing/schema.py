"""Fake pricing schema, for `obol migrate` tests (shadows the real one)."""

from pathlib import Path

SCHEMA = "fakepricing"
MIGRATIONS_DIR = Path(__file__).parent / "migrations"
