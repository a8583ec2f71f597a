"""Compaction (SPEC rule 6): big proto-sessions are kept compressed."""

from __future__ import annotations

from ..config import Settings
from ..hit import Hit
from ..middleware import BaseMiddleware, Context, Next
from ..codec import dictionaries
from ..state import ProtoSession, SessionKey, StoredHit, compress_hits, decompress_hits


class Compaction(BaseMiddleware):
    """Once the uncompressed hits of a proto-session pass the threshold, they
    move into a compressed block; `on_collect` gives them back in arrival
    order, so compaction never changes the output. A threshold of 0 turns it off.
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
        """Move the uncompressed hits of `ps` into a compressed block (with
        the stream's dictionary once there is one, `protosessions.codec`);
        with a store, the hits it does not hold yet stay queued for it."""
        dict_id = dictionaries.current
        if not dict_id:
            dictionaries.offer(ps.hits)
        block = compress_hits(ps.hits, dict_id)
        ps.compacted.append(block)
        if ps.sid and len(ps.hits) > ps.sealed_upto:
            if ps.unsaved is None:
                ps.unsaved = []
            ps.unsaved.append(block if not ps.sealed_upto
                              else compress_hits(ps.hits[ps.sealed_upto:]))
        ps.hits = []
        ps.sealed_upto = 0  # those hits are in the block now
        ps.size = 0
        ctx.stats["compactions"] += 1

    def on_collect(self, ctx: Context, acid: SessionKey) -> list[StoredHit]:
        ps = ctx.sessions.get(acid)
        if ps is None or not ps.compacted:
            return []
        hits: list[StoredHit] = []
        for blob in ps.compacted:
            hits.extend(decompress_hits(blob))
        return hits
