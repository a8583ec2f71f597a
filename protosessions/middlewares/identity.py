"""Identity joining (SPEC rule 1): session stamps and user IDs, property-isolated.

Runs in its own step, keyed by join key, before the session step: it only
rewrites a hit's ACID; the hit then travels to the shard of its new ACID.
"""

from __future__ import annotations

from ..config import Settings
from ..hit import Hit
from ..middleware import BaseMiddleware, Context, Next
from ..wheel import TimingWheel

SNAPSHOT_VERSION = 1

ClaimKey = tuple  # (property_id, join key)


class Claim:
    """Who owns a join key, and when a hit with that key was last seen."""

    __slots__ = ("owner", "last", "bucket")

    def __init__(self, owner: str, last: int, bucket: int = -1) -> None:
        self.owner = owner
        self.last = last
        self.bucket = bucket


class ClaimTable:
    """The live claims of one identity shard; lapsed claims are purged by the wheel."""

    __slots__ = ("claims", "wheel", "clock")

    def __init__(self) -> None:
        self.claims: dict[ClaimKey, Claim] = {}
        self.wheel = TimingWheel()
        self.clock = 0

    def snapshot(self) -> tuple:
        return (SNAPSHOT_VERSION, self.clock,
                tuple((k, c.owner, c.last, c.bucket) for k, c in self.claims.items()))

    @classmethod
    def restore(cls, snap: tuple) -> "ClaimTable":
        if not isinstance(snap, tuple) or not snap or snap[0] != SNAPSHOT_VERSION:
            raise ValueError(f"identity snapshot format {snap[0] if snap else snap!r} "
                             f"is not {SNAPSHOT_VERSION}: this build cannot resume it")
        table = cls()
        table.clock = snap[1]
        for key, owner, last, bucket in snap[2]:
            table.claims[key] = Claim(owner, last, bucket)
            table.wheel.schedule(key, bucket)
        return table


class IdentityJoin(BaseMiddleware):
    """Strategy `rewrite`: a hit whose join key is owned takes the owner's ACID.

    The first hit that carries a join key claims it for its ACID. The claim
    lapses once no hit with the key came for `session_duration`: for a hit at
    `t` read at clock `c`, when `t - last >= session_duration`, or when
    `c - allowed_lateness >= last + session_duration` (the clock already
    closed every proto-session that hit could have joined).
    """

    def __init__(self, settings: Settings, table: ClaimTable) -> None:
        self.duration = settings.session_duration_us
        self.lateness = settings.allowed_lateness_us
        self.tick = settings.tick_us
        self.table = table

    def handle(self, ctx: Context, hit: Hit, next: Next) -> None:
        jk = hit.join_key
        if jk is not None:
            key = (hit.property_id, jk)
            claims = self.table.claims
            claim = claims.get(key)
            if claim is not None and not (
                hit.t - claim.last >= self.duration
                or hit.clock - self.lateness >= claim.last + self.duration
            ):
                hit.acid = claim.owner
                if hit.t > claim.last:
                    claim.last = hit.t
            else:
                claim = claims[key] = Claim(hit.acid, hit.t)
            bucket = (claim.last + self.duration + self.lateness) // self.tick
            if bucket != claim.bucket:
                claim.bucket = bucket
                self.table.wheel.schedule(key, bucket)
        next(hit)

    def on_ping(self, ctx: Context, ts: int) -> None:
        """Forget claims no later hit can find alive."""
        claims = self.table.claims
        for b, key in self.table.wheel.due(ts // self.tick):
            claim = claims.get(key)
            if claim is not None and claim.bucket == b:
                del claims[key]
