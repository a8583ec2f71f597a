"""De-duplication (SPEC rule 5): Kafka delivers at least once and recovery replays."""

from __future__ import annotations

from ..hit import Hit
from ..middleware import BaseMiddleware, Context, Next


class Dedup(BaseMiddleware):
    """Drops a hit whose `id` is already in its open proto-session, and counts it.

    The ids live on the proto-session itself, so they vanish when it closes.
    """

    def handle(self, ctx: Context, hit: Hit, next: Next) -> None:
        ps = ctx.sessions.get(hit.key)
        if ps is not None and hit.id in ps.ids:
            ctx.stats["duplicates"] += 1
            return
        next(hit)
