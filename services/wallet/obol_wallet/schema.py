"""Where the wallet service keeps its tables: its own Postgres schema."""

from pathlib import Path

SCHEMA = "wallet"
MIGRATIONS_DIR = Path(__file__).parent / "migrations"
