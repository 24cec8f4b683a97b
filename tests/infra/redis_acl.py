"""The least-privilege Redis user of deploy/redis/obol-user.acl, made on a test's server."""

from __future__ import annotations

from pathlib import Path

import redis

RULES_FILE = Path(__file__).parents[2] / "deploy" / "redis" / "obol-user.acl"
USER = "obol"
PASSWORD = "acl-test-password"


def acl_rules() -> list[str]:
    """The rules of the file: every token of its lines that are not comments."""
    lines = RULES_FILE.read_text().splitlines()
    return [token for line in lines if not line.startswith("#") for token in line.split()]


def create_obol_user(admin_url: str) -> None:
    """User `obol` (password PASSWORD) with the file's rules, and an empty ACL LOG."""
    with redis.Redis.from_url(admin_url) as admin:
        admin.execute_command("ACL", "SETUSER", USER, *acl_rules(), "on", f">{PASSWORD}")
        admin.acl_log_reset()


def refusals(admin_url: str) -> list[str]:
    """What the server refused since (ACL LOG): reason, object and context of each."""
    with redis.Redis.from_url(admin_url) as admin:
        entries = admin.acl_log()
    return [f"{e['reason']}: {e['object']} ({e['context']})" for e in entries]
