"""One middleware per module; `default_chain` is the order the engine runs them in."""

from __future__ import annotations

from ..config import Settings
from ..hit import Hit
from ..middleware import Context, Middleware, Next, append_hit
from .close_trigger import CloseTrigger
from .compaction import Compaction
from .dedup import Dedup

__all__ = ["CloseTrigger", "Compaction", "Dedup", "default_chain", "with_append_fast_path"]


def default_chain(settings: Settings) -> list[Middleware]:
    """Close first (a hit for an expired proto-session starts a new one, so it
    is never a duplicate of the closed one), then de-duplicate, then compact."""
    return [CloseTrigger(settings), Dedup(), Compaction(settings)]


def with_append_fast_path(ctx: Context) -> Next:
    """`ctx.entry` for the default chain ending in `Context.store`, with the
    common case taken in one Python call: the hit joins its open
    proto-session, which neither the hit nor its storing closes (no
    inactivity, `max_duration`, duplicate or `max_events`). That case runs
    exactly what the chain runs, in the same order: CloseTrigger finds
    nothing to close, Dedup passes the hit, `store` appends it, Compaction
    compacts past the threshold, CloseTrigger files the new expiry. Every
    other hit goes down the chain itself (`ctx.entry` as built)."""
    slow = ctx.entry
    mws = ctx.middlewares
    if [mw.__class__ for mw in mws] != [CloseTrigger, Dedup, Compaction]:
        return slow
    trigger, _, compaction = mws
    sessions = ctx.sessions
    wheel = ctx.state.wheel
    duration, lateness, tick = trigger.duration, trigger.lateness, trigger.tick
    max_duration, last_event = trigger.max_duration, trigger.max_events - 1
    threshold = compaction.threshold
    keep_raw = ctx.keep_raw
    fresh = ctx.state.fresh

    def append(hit: Hit) -> None:
        key = hit.key
        ps = sessions.get(key)
        if ps is None:
            return slow(hit)
        t = hit.t
        c = hit.clock
        last = ps.last_t
        first = ps.first_t
        if (t - last >= duration or c - lateness >= last + duration
                or t - first >= max_duration or ps.count >= last_event or hit.id in ps.ids):
            return slow(hit)
        # Context.store, for an open proto-session
        if t < first:
            ps.first_t = t
        elif t > last:
            ps.last_t = last = t
        if c > ps.seen_clock:
            ps.seen_clock = c
        append_hit(ps, hit, t, keep_raw, fresh)
        # Compaction
        if threshold and ps.size > threshold:
            compaction.compact(ctx, ps)
        # CloseTrigger, after the hit is stored (count < max_events: no close)
        expires = last + duration + lateness
        if ps.seen_clock >= expires:
            expires = ps.seen_clock + 1
        bucket = expires // tick
        if bucket != ps.bucket:  # ctx.state.schedule(key, ps, bucket), inlined
            ps.bucket = bucket
            if ps.filed < 0:
                ps.filed = bucket
                wheel.schedule(ps.key, bucket)
    return append
