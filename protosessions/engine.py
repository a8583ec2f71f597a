"""The two keyed stages of the engine, free of any stream framework.

`IdentityShard` rewrites ACIDs for the hits of one group of join keys;
`SessionShard` groups the hits of one group of `(property_id, ACID)` keys into
proto-sessions and closes them. The Bytewax flow holds one of each per key;
`Engine` chains them in-process for the library's own users and tests.
"""

from __future__ import annotations

import zlib
from collections import Counter
from typing import Iterable, Iterator

from .clock import Clock
from .closer import CollectingCloser, Requeue
from .config import Settings
from .hit import DeadLetter, Hit, parse_hit, source_dict
from .middleware import BY_CLOCK, Context, handler
from .middlewares import default_chain, with_append_fast_path
from .middlewares.close_trigger import CloseTrigger
from .middlewares.identity import ClaimTable, identity_join
from .state import ShardState
from .store import ShardStore
from .timefmt import wall_now_us


def shard_of(text: str, shards: int) -> int:
    """Stable shard number of a key (same in every process and run)."""
    return zlib.crc32(text.encode()) % shards


def identity_shard(hit: Hit, shards: int, by_property: bool = False) -> int:
    """The identity shard of a hit: the shard of `(property, join key)`; with
    `by_property` (identity rules `d8a`, where one hit claims two keys), the
    shard of its property, so that both keys live in one shard."""
    if shards == 1:
        return 0
    if by_property:
        return shard_of(hit.property_id, shards)
    jk = hit.join_key  # None: nothing to join, any shard will do; spread by client
    return shard_of(hit.property_id + "\n" + (jk if jk is not None else hit.client_id), shards)


def session_shard(hit: Hit, shards: int) -> int:
    """The session shard of a hit: the shard of `(property_id, ACID)`."""
    return shard_of(hit.property_id + "\n" + hit.acid, shards)


class IdentityShard:
    """Identity joining for the join keys of one shard.

    Its clock is its own (the greatest time this group of keys has handled),
    not the worker's: which claims are alive must not depend on which other
    groups share a worker, so results do not change with the worker count.
    """

    def __init__(self, settings: Settings, snapshot: tuple | None = None,
                 store: ShardStore | None = None, track: bool = False) -> None:
        """`store`: where snapshots write the changed claims (`track`: it
        will have one, opened later); a store snapshot is resumed from it."""
        self.table = (ClaimTable.restore(snapshot, store, track) if snapshot is not None
                      else ClaimTable(track or store is not None))
        self.store = store
        self.state = ShardState()
        self.state.clock = self.table.clock
        clock = Clock(self.table.clock)
        self.out: list[Hit] = []
        self.join = identity_join(settings, self.table)
        self.ctx = Context(settings, self.state, clock, CollectingCloser(), [self.join],
                           terminal=self.out.append)
        self.fast = not self.join.evict  # `join_batch` instead of the chain, hit by hit

    def on_hits(self, hits: Iterable[Hit]) -> list[Hit]:
        """Join a batch; each hit leaves stamped with the clock of this stage
        (the greatest time it has handled), which a restored snapshot carries
        across a restart."""
        hits = sorted(hits, key=BY_CLOCK)
        clock = self.table.clock
        for hit in hits:
            if hit.clock < clock:
                hit.clock = clock
            else:
                clock = hit.clock
        if self.fast:  # what `handler` does, with the chain's one middleware in one loop
            if clock > self.state.clock:
                self.state.clock = clock
            self.ctx.clock.advance(clock)
            out: list[Hit] = []
            self.join.join_batch(hits, out)
            self.ctx.ping(self.ctx.clock.now)
            self.table.clock = self.state.clock
            return out
        handler(self.ctx, hits)
        self.table.clock = self.state.clock
        out, self.out[:] = list(self.out), []
        return out

    def tick(self, clock: int = 0) -> None:
        """Forget the claims the clock (moved on to `clock`) has lapsed."""
        self.ctx.clock.advance(clock)
        if clock > self.table.clock:
            self.table.clock = self.state.clock = clock
        self.ctx.ping(self.ctx.clock.now)

    @property
    def empty(self) -> bool:
        return not self.table.claims

    def snapshot(self) -> tuple:
        return self.table.snapshot(self.store)


class SessionShard:
    """Proto-sessions for the `(property_id, ACID)` keys of one shard."""

    def __init__(self, settings: Settings, clock: Clock, snapshot: tuple | None = None,
                 store: ShardStore | None = None, budget: int = 0) -> None:
        """`store`: where snapshots write their changes (`protosessions.store`);
        without one a snapshot carries the whole open state. A fresh shard
        (no snapshot) empties the store: what it holds is of no resumable
        epoch. `budget`: bytes of sealed hits kept in RAM, past which the
        coldest live only in the store (`ShardState.spill`; 0: no limit)."""
        if snapshot is not None:
            self.state = ShardState.restore(snapshot, store, budget)
        else:
            if store is not None:
                store.rollback(None)
            self.state = ShardState(store, budget)
        clock.advance(self.state.clock)
        self.closer = CollectingCloser(settings.session_hits)
        self.ctx = Context(settings, self.state, clock, self.closer, default_chain(settings))
        self.ctx.entry = with_append_fast_path(self.ctx)

    def on_hits(self, hits: Iterable[Hit]) -> list[tuple[str, bytes]]:
        """Handle hits; returns the sessions they (and the clock) closed."""
        handler(self.ctx, hits)
        return self.closer.take()

    def tick(self) -> list[tuple[str, bytes]]:
        """Close what the worker clock has expired."""
        self.ctx.ping(self.ctx.clock.now)
        return self.closer.take()

    def close_all(self) -> list[tuple[str, bytes]]:
        """End of input: close everything, as `inactivity` where the clock had
        already expired it, else `end_of_input`."""
        trigger = self.ctx.middlewares[0]
        assert isinstance(trigger, CloseTrigger)
        now = self.ctx.clock.now
        for key, ps in list(self.state.sessions.items()):
            self.ctx.close(key, trigger.end_reason(ps, now))
        return self.closer.take()

    @property
    def empty(self) -> bool:
        return not self.state.sessions

    @property
    def stats(self) -> Counter:
        return self.ctx.stats

    def snapshot(self) -> tuple:
        """Carries the worker clock too, so a resumed worker starts where it was."""
        self.state.clock = max(self.state.clock, self.ctx.clock.now)
        return self.state.snapshot()


class Engine:
    """The whole engine in one process and one worker: lines in, sessions out.

    The reference the Bytewax flow is tested against, and a library entry
    point for callers that need no stream framework.
    """

    def __init__(self, settings: Settings, future_check: bool = True) -> None:
        self.settings = settings
        self.future_check = future_check
        self.parse_clock = Clock()
        self.identity = IdentityShard(settings)
        self.sessions = SessionShard(settings, Clock())
        self.dead_letters: list[DeadLetter] = []

    def feed(self, lines: Iterable[bytes], name: str = "-") -> Iterator[tuple[str, bytes]]:
        """Run raw lines (file order) through; yields closed sessions as they close.

        Hits re-queued by strategy `evict` go back through the input right away,
        as they would through the hits topic.
        """
        wall = wall_now_us() if self.future_check else None
        for n, raw in enumerate(lines, 1):
            raw = raw.rstrip(b"\r\n")
            if not raw.strip():
                continue
            pending = [((name, n), raw)]
            while pending:
                loc, raw = pending.pop(0)
                hit = parse_hit(raw, self.settings, wall, self.parse_clock.now)
                if hit.__class__ is str:
                    self.dead_letters.append(DeadLetter(hit, raw, source_dict(loc)))
                    continue
                self.parse_clock.advance(hit.t)
                for out in self.sessions.on_hits(self.identity.on_hits([hit])):
                    if out.__class__ is Requeue:
                        pending.append((("requeue", 0), out.value))
                    else:
                        yield out

    def finish(self) -> list[tuple[str, bytes]]:
        return self.sessions.close_all()

    def run(self, lines: Iterable[bytes], name: str = "-") -> list[tuple[str, bytes]]:
        out = list(self.feed(lines, name))
        out.extend(self.finish())
        return out
