"""The middleware chain that turns hits into proto-sessions.

As in the Go engine, each hit runs through a chain of middlewares; each may
act before and after calling `next`, or stop the hit. The end of the chain
stores the hit in its proto-session. Closing a proto-session collects its hits
from every middleware (`on_collect`), hands them to the `Closer`, then lets
every middleware forget it (`on_cleanup`). Clock ticks reach every middleware
through `on_ping`.
"""

from __future__ import annotations

from collections import Counter, deque
from functools import partial
from operator import attrgetter
from typing import Callable, Iterable, Protocol

from . import d8a
from .clock import Clock
from .closer import Closer
from .config import Settings
from .hit import Evict, Hit
from .session import with_acid
from .state import ProtoSession, SessionKey, ShardState, StoredHit

Next = Callable[[Hit], None]


class Middleware(Protocol):
    """One step of the chain. Only `handle` is required to do anything."""

    def handle(self, ctx: "Context", hit: Hit, next: Next) -> None: ...

    def on_cleanup(self, ctx: "Context", acid: SessionKey) -> None: ...

    def on_collect(self, ctx: "Context", acid: SessionKey) -> list[StoredHit]: ...

    def on_ping(self, ctx: "Context", ts: int) -> None: ...


class BaseMiddleware:
    """No-op hooks, so a middleware only writes the ones it needs."""

    def handle(self, ctx: "Context", hit: Hit, next: Next) -> None:
        next(hit)

    def on_cleanup(self, ctx: "Context", acid: SessionKey) -> None:
        return None

    def on_collect(self, ctx: "Context", acid: SessionKey) -> list[StoredHit]:
        return []

    def on_ping(self, ctx: "Context", ts: int) -> None:
        return None


class Context:
    """What middlewares share: the shard's state, settings, clock, closer, counters.

    Keys passed as `acid` are `(property_id, ACID)` pairs: every identifier is
    scoped by property.
    """

    def __init__(self, settings: Settings, state: ShardState, clock: Clock,
                 closer: Closer, middlewares: list[Middleware],
                 terminal: Next | None = None) -> None:
        self.settings = settings
        self.state = state
        self.sessions = state.sessions
        self.clock = clock
        self.closer = closer
        self.middlewares = middlewares
        self.stats: Counter[str] = Counter()
        # `--session-hits ids|none` write no hit bytes, and need none kept
        # (unless strategy `evict` re-sends a moved proto-session's hits).
        self.keep_raw = settings.session_hits == "full" or settings.eviction_strategy == "evict"
        self.entry: Next = self._build_chain(terminal or self.store)

    def _build_chain(self, nxt: Next) -> Next:
        for mw in reversed(self.middlewares):
            nxt = _link(self, mw, nxt)
        return nxt

    def store(self, hit: Hit) -> None:
        """End of the chain: append the hit, with its ACID set, to its open proto-session."""
        key = hit.key
        ps = self.sessions.get(key)
        t = hit.t
        if ps is None:
            ps = self.sessions[key] = ProtoSession(hit.property_id, hit.acid)
            ps.first_t = ps.last_t = t
        elif t < ps.first_t:
            ps.first_t = t
        elif t > ps.last_t:
            ps.last_t = t
        if hit.clock > ps.seen_clock:
            ps.seen_clock = hit.clock
        append_hit(ps, hit, t, self.keep_raw, self.state.fresh)

    def collect_all(self, acid: SessionKey) -> list[StoredHit]:
        """Every stored hit of a proto-session, oldest arrival first."""
        hits: list[StoredHit] = []
        for mw in self.middlewares:
            hits.extend(mw.on_collect(self, acid))
        ps = self.sessions.get(acid)
        if ps is not None:
            hits.extend(self.state.all_hits(ps))
        return hits

    def trigger_cleanup(self, acid: SessionKey) -> None:
        """Forget a proto-session everywhere."""
        for mw in self.middlewares:
            mw.on_cleanup(self, acid)
        ps = self.sessions.pop(acid, None)
        if ps is not None:
            self.state.forget(ps)

    def close(self, acid: SessionKey, reason: str) -> None:
        """Close one proto-session: collect, hand to the closer, clean up."""
        ps = self.sessions.get(acid)
        if ps is None:
            return
        hits = self.collect_all(acid)
        self.closer.close(ps, hits, reason)
        self.stats["closed:" + reason] += 1
        self.trigger_cleanup(acid)

    def evict(self, cmd: Evict) -> None:
        """Strategy `evict`: take the proto-session of `cmd.acid` out, without
        closing it, and hand its hits (re-pointed at the owner) to the closer's
        `requeue`, to go back through the input."""
        key = (cmd.property_id, cmd.acid)
        if key not in self.sessions:
            return
        hits = self.collect_all(key)
        self.trigger_cleanup(key)
        self.stats["evictions"] += 1
        self.stats["evicted_hits"] += len(hits)
        set_acid = d8a.with_acid if self.settings.input_format == "d8a" else with_acid
        self.closer.requeue(cmd.owner, [set_acid(h[1], cmd.owner, True) for h in hits])

    def ping(self, ts: int) -> None:
        """Tell every middleware the clock reached `ts` (closes what expired)."""
        for mw in self.middlewares:
            mw.on_ping(self, ts)
        self.state.seal_cold(ts)


def append_hit(ps: ProtoSession, hit: Hit, t: int, keep_raw: bool = True,
               fresh: "deque | None" = None) -> None:
    """Add a hit, with its ACID set, to a proto-session's stored hits, ids,
    clients, users and metrics (its times are the caller's). Without
    `keep_raw` the stored hit holds no bytes (`Context.keep_raw`). `fresh`:
    the shard's queue of proto-sessions with loose hits to seal
    (`ShardState.seal_cold`)."""
    raw = hit.raw
    if not keep_raw:
        raw = b""
    elif hit.d8a_form:  # SPEC "The d8a form": written back as `AuthoritativeClientID`
        if hit.d8a_form == 1 or hit.acid != hit.client_id:  # 2: it already holds the ACID
            raw = d8a.with_acid(raw, hit.acid, hit.has_acid)
    elif hit.has_acid or raw[-1:] != b"}":
        raw = with_acid(raw, hit.acid, hit.has_acid)
    else:  # the common case: append the field to the hit as received
        raw = raw[:-1] + ps.acid_suffix()
    if not ps.hits and fresh is not None:
        fresh.append((hit.clock, ps.key))
    ps.hits.append((t, raw, hit.id))
    ps.metrics.add(t, ps.count, hit.params)
    ps.count += 1
    ps.size += len(raw) if keep_raw else len(hit.id) + 48  # what it holds, for compaction
    ps.ids.add(hit.id)
    ps.client_ids.add(hit.client_id)
    if hit.user_id:
        ps.user_ids.add(hit.user_id)


def _link(ctx: Context, mw: Middleware, nxt: Next) -> Next:
    """`hit -> mw.handle(ctx, hit, nxt)`, as a C-level partial (no extra frame)."""
    return partial(mw.handle, ctx, next=nxt)


BY_CLOCK = attrgetter("clock")  # hits in the order a single worker handled them


def handler(ctx: Context, hits: Iterable[Hit]) -> None:
    """Run a batch of hits through the chain, then tick the clock.

    Hits are taken in order of the worker clock at which they were read (a
    stable sort, so ties keep arrival order): that is the order in which a
    single worker handled them, whatever batches they arrived in.
    """
    entry = ctx.entry
    clock = ctx.clock
    state = ctx.state
    for hit in sorted(hits, key=BY_CLOCK):
        c = hit.clock
        if c > state.clock:
            state.clock = c
        if c > clock.now:  # clock.advance(c), inlined
            clock.now = c
        if hit.__class__ is Evict:
            ctx.evict(hit)  # type: ignore[arg-type]
        else:
            entry(hit)
    ctx.ping(clock.now)
