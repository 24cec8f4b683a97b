"""The wallet's Lua scripts, each run with EVALSHA (reloaded on NOSCRIPT).

Redis 6.2 has no Functions, so every wallet script is `lua/common.lua` (shared helpers and
the wallet's counters) followed by the operation's own file; see the comments there. The
scripts that spend, grant.lua and the top_up_*.lua scripts also get `lua/top_up.lua` (auto
top-up and balance alerts) in between.
"""

from __future__ import annotations

from importlib.resources import files

from obol_core.redis import LuaScript, RedisClient

_LUA = files(__package__).joinpath("lua")


def _source(name: str, *, common: bool = True, top_up: bool = False) -> str:
    body = _LUA.joinpath(f"{name}.lua").read_text(encoding="utf-8")
    if top_up:
        body = _LUA.joinpath("top_up.lua").read_text(encoding="utf-8") + "\n" + body
    if not common:
        return body
    return _LUA.joinpath("common.lua").read_text(encoding="utf-8") + "\n" + body


class Scripts:
    """One LuaScript per operation, bound to a client."""

    def __init__(self, client: RedisClient) -> None:
        self.authorize = LuaScript(client, _source("authorize", top_up=True))
        self.capture = LuaScript(client, _source("capture", top_up=True))
        self.void = LuaScript(client, _source("void"))
        self.debit = LuaScript(client, _source("debit", top_up=True))
        self.extend = LuaScript(client, _source("extend"))
        self.charge = LuaScript(client, _source("charge", top_up=True))
        self.grant = LuaScript(client, _source("grant", top_up=True))
        self.refund = LuaScript(client, _source("refund"))
        self.settings = LuaScript(client, _source("settings"))
        self.read = LuaScript(client, _source("read"))
        self.hold = LuaScript(client, _source("hold"))
        self.open = LuaScript(client, _source("open"))
        self.hydrate = LuaScript(client, _source("hydrate"))
        self.hydrate_records = LuaScript(client, _source("hydrate_records", common=False))
        self.top_up_rule = LuaScript(client, _source("top_up_rule", top_up=True))
        self.top_up_fail = LuaScript(client, _source("top_up_fail", top_up=True))
        self.top_up_due = LuaScript(client, _source("top_up_due", top_up=True))

    def all(self) -> list[LuaScript]:
        return [value for value in vars(self).values() if isinstance(value, LuaScript)]

    async def load(self) -> None:
        """Load every script (fails fast on a script error)."""
        for script in self.all():
            await script.load()
