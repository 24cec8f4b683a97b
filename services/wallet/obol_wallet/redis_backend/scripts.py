"""The wallet's Lua scripts, each run with EVALSHA (reloaded on NOSCRIPT).

Redis 6.2 has no Functions, so every wallet script is `lua/common.lua` (shared helpers and
the wallet's counters) followed by the operation's own file; see the comments there.
"""

from __future__ import annotations

from importlib.resources import files

from obol_core.redis import LuaScript, RedisClient

_LUA = files(__package__).joinpath("lua")


def _source(name: str, *, common: bool = True) -> str:
    body = _LUA.joinpath(f"{name}.lua").read_text(encoding="utf-8")
    if not common:
        return body
    return _LUA.joinpath("common.lua").read_text(encoding="utf-8") + "\n" + body


class Scripts:
    """One LuaScript per operation, bound to a client."""

    def __init__(self, client: RedisClient) -> None:
        self.authorize = LuaScript(client, _source("authorize"))
        self.capture = LuaScript(client, _source("capture"))
        self.void = LuaScript(client, _source("void"))
        self.charge = LuaScript(client, _source("charge"))
        self.grant = LuaScript(client, _source("grant"))
        self.refund = LuaScript(client, _source("refund"))
        self.settings = LuaScript(client, _source("settings"))
        self.read = LuaScript(client, _source("read"))
        self.hold = LuaScript(client, _source("hold"))
        self.open = LuaScript(client, _source("open"))
        self.hydrate = LuaScript(client, _source("hydrate"))
        self.hydrate_records = LuaScript(client, _source("hydrate_records", common=False))

    def all(self) -> list[LuaScript]:
        return [value for value in vars(self).values() if isinstance(value, LuaScript)]

    async def load(self) -> None:
        """Load every script (fails fast on a script error)."""
        for script in self.all():
            await script.load()
