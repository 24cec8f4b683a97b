"""The wallet's Lua scripts, each run with EVALSHA (reloaded on NOSCRIPT).

Every wallet script is `lua/common.lua` (shared helpers and the wallet's counters) followed
by the operation's own file; see the comments there. They are scripts, not a Redis 7
Function library (which would make the helpers once, not on every call: ~8 us of an
authorization's ~59 us of Redis time): common.lua keeps the call's state (its keys, the
wallet's counters, the entries made) in locals its helpers close over, and a library's
helpers would have to take that state as arguments. Scripts also still run on a Redis 6.2
found on PATH. The scripts that spend, grant.lua and the top_up_*.lua scripts also get
`lua/top_up.lua` (auto top-up and balance alerts) in between.
"""

from __future__ import annotations

from importlib.resources import files

from obol_core.redis import LuaScript, RedisClient, ReplicaAcks

_LUA = files(__package__).joinpath("lua")


def _source(name: str, *, common: bool = True, top_up: bool = False) -> str:
    body = _LUA.joinpath(f"{name}.lua").read_text(encoding="utf-8")
    if top_up:
        body = _LUA.joinpath("top_up.lua").read_text(encoding="utf-8") + "\n" + body
    if not common:
        return body
    return _LUA.joinpath("common.lua").read_text(encoding="utf-8") + "\n" + body


class Scripts:
    """One LuaScript per operation, bound to a client; with `replica_acks`, every call is
    answered only once that many replicas have its writes (obol_core.redis.ReplicaAcks)."""

    def __init__(self, client: RedisClient, *, replica_acks: ReplicaAcks | None = None) -> None:
        def script(name: str, *, common: bool = True, top_up: bool = False) -> LuaScript:
            source = _source(name, common=common, top_up=top_up)
            return LuaScript(client, source, replica_acks=replica_acks)

        self.authorize = script("authorize", top_up=True)
        self.capture = script("capture", top_up=True)
        self.void = script("void")
        self.debit = script("debit", top_up=True)
        self.extend = script("extend")
        self.charge = script("charge", top_up=True)
        self.grant = script("grant", top_up=True)
        self.refund = script("refund")
        self.settings = script("settings")
        self.read = script("read")
        self.hold = script("hold")
        self.open = script("open")
        self.hydrate = script("hydrate")
        self.hydrate_records = script("hydrate_records", common=False)
        self.top_up_rule = script("top_up_rule", top_up=True)
        self.top_up_fail = script("top_up_fail", top_up=True)
        self.top_up_due = script("top_up_due", top_up=True)

    def all(self) -> list[LuaScript]:
        return [value for value in vars(self).values() if isinstance(value, LuaScript)]

    async def load(self) -> None:
        """Load every script (fails fast on a script error)."""
        for script in self.all():
            await script.load()
