"""An in-memory model of one wallet: what the backends must agree with, step by step.

Deliberately naive (lists and sums, no cleverness) so that it is obviously right:
grants drawn by priority, then earliest expiry (never-expiring last), then oldest; holds
counted against the balance; time settled (expiry) before every step.
"""

from __future__ import annotations

from dataclasses import dataclass, field

NEVER = 0


@dataclass
class ModelGrant:
    grant_id: str
    remaining: int
    priority: int
    expires_ms: int
    order: int  # creation order

    def draw_key(self) -> tuple[int, float, int]:
        return (self.priority, self.expires_ms or float("inf"), self.order)


@dataclass
class ModelHold:
    hold_id: str
    amount: int
    expires_ms: int
    state: str = "open"


@dataclass
class WalletModel:
    now: int
    grants: dict[str, ModelGrant] = field(default_factory=dict)
    holds: dict[str, ModelHold] = field(default_factory=dict)
    overdraft_used: int = 0
    # An expiry took funds that open holds were counting on: available may then dip below
    # zero until those holds resolve (the only way it can).
    expired_under_holds: bool = False

    def settle(self) -> None:
        held_before = self.held
        for grant in self.grants.values():
            if grant.expires_ms != NEVER and grant.expires_ms <= self.now and grant.remaining:
                grant.remaining = 0
                if held_before:
                    self.expired_under_holds = True
        for hold in self.holds.values():
            if hold.state == "open" and hold.expires_ms <= self.now:
                hold.state = "expired"

    @property
    def active(self) -> int:
        return sum(g.remaining for g in self.grants.values())

    @property
    def held(self) -> int:
        return sum(h.amount for h in self.holds.values() if h.state == "open")

    @property
    def available(self) -> int:
        return self.active + self.overdraft_used - self.held

    def add_grant(self, grant: ModelGrant) -> None:
        grant.order = len(self.grants)
        self.grants[grant.grant_id] = grant

    def draw(self, amount: int) -> None:
        for grant in sorted(self.grants.values(), key=ModelGrant.draw_key):
            take = min(grant.remaining, amount)
            grant.remaining -= take
            amount -= take
        self.overdraft_used -= amount

    def remaining_by_grant(self) -> dict[str, int]:
        return {g.grant_id: g.remaining for g in self.grants.values() if g.remaining}
