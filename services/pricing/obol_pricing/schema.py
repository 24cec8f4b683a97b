"""Where the pricing service keeps its tables: its own Postgres schema."""

from pathlib import Path

SCHEMA = "pricing"
MIGRATIONS_DIR = Path(__file__).parent / "migrations"
