"""Where the costs service keeps its tables: its own Postgres schema."""

from pathlib import Path

SCHEMA = "costs"
MIGRATIONS_DIR = Path(__file__).parent / "migrations"
