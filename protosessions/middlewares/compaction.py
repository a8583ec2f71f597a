"""Compaction (SPEC rule 6): big proto-sessions are kept compressed."""

from __future__ import annotations

from ..config import Settings
from ..hit import Hit
from ..middleware import BaseMiddleware, Context, Next
from ..state import ProtoSession


class Compaction(BaseMiddleware):
    """Once the uncompressed hits of a proto-session pass the threshold, they
    move into a compressed block; `ProtoSession.all_hits` gives them back in
    arrival order, so compaction never changes the output. A threshold of 0 turns it off.
    """

    def __init__(self, settings: Settings) -> None:
        self.threshold = settings.compaction_threshold

    def handle(self, ctx: Context, hit: Hit, next: Next) -> None:
        next(hit)
        if not self.threshold:
            return
        ps = ctx.sessions.get(hit.key)
        if ps is not None and ps.size > self.threshold:
            self.compact(ctx, ps)

    def compact(self, ctx: Context, ps: ProtoSession) -> None:
        """Move the uncompressed hits of `ps` into a compressed block
        (`ProtoSession.seal`); `size` counts from here again."""
        ctx.state.seal(ps)
        ps.size = 0
        ctx.stats["compactions"] += 1
