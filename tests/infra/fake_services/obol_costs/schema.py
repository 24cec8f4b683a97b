"""Fake costs schema, for `obol migrate` tests (shadows the real one)."""

from pathlib import Path

SCHEMA = "fakecosts"
MIGRATIONS_DIR = Path(__file__).parent / "migrations"
