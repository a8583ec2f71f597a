"""The dataflow's keyed steps: identity, then sessions, each handling its
share of the hits in time-merge order (SPEC rule 2). Thin wrappers that hand
batches to the library and tell Bytewax when to wake a key up."""

from __future__ import annotations

import logging
import threading
import time
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, Callable, Iterable, Optional

from bytewax.operators import StatefulBatchLogic

from protosessions import stats
from protosessions.clock import Clock, WallFollowingClock
from protosessions.config import Settings
from protosessions.engine import IdentityShard, SessionShard, identity_shard, session_shard
from protosessions.hit import Hit
from protosessions.merge import END, MergeBuffer, Watermark
from protosessions.middlewares.identity import ClaimTable
from protosessions.state import ShardState, check_version
from protosessions.timefmt import format_time_us, wall_now_us

from . import metrics, stop
from .backlog import backlog
from .placement import shard_keys
from .routing import PerWorker, Router

if TYPE_CHECKING:
    from .state_store import ShardStores

log = logging.getLogger("protosessions")


def make_clock(streaming: bool, skip_catching_up: bool, idle_us: int) -> Clock:
    """A session shard's clock. Streaming, it also follows wall time while
    every partition is caught up and idle; with `skip_catching_up` it starts
    at wall time instead of where the snapshot left it."""
    if not streaming:
        return Clock()
    wall = wall_now_us()
    return WallFollowingClock(wall if skip_catching_up else 0, wall, idle_us)


def dead_letters(key: str | None) -> Callable[[list], list]:
    """Rejects of the source batches as `(key, dead-letter JSON)`."""
    def rejects(batch: list) -> list:
        return [(key, d.to_json()) for _, dead, _ in batch for d in dead]
    return rejects


_CACHED_KEYS = 1 << 16  # shards remembered per step; then forgotten at once


def _remembered(shard_of: Callable[[Any], int], decided_by: Callable[[Any], tuple]
                ) -> Callable[[Any], int]:
    """`shard_of`, remembered by what decides it (a bounded cache: the hash
    of a key's text costs more than a dict lookup)."""
    cache: dict[tuple, int] = {}

    def shard(h: Any) -> int:
        ck = decided_by(h)
        i = cache.get(ck)
        if i is None:
            if len(cache) >= _CACHED_KEYS:
                cache.clear()
            i = cache[ck] = shard_of(h)
        return i
    return shard


def _join_key_of(h: Hit) -> tuple:
    jk = h.join_key
    return (h.property_id, jk) if jk is not None else (h.property_id, None, h.client_id)


def _session_key_of(h: Any) -> tuple:
    return h.key if h.__class__ is Hit else (h.property_id, h.acid)  # else an Evict


def heartbeat_s(settings: Settings) -> float:
    """How often a router tells every shard the progress it missed: half a
    tick, so a shard's wall-following anchor is never a tick old while hits
    still arrive (`flows.routing`)."""
    return settings.tick_us / 2e6


def _property_of(h: Hit) -> tuple:
    return (h.property_id,)


def to_identity(shards: int, settings: Settings, by_property: bool = False
                ) -> Callable[[list], list]:
    """Source batches -> identity shard items (by join key; `by_property`:
    by property, for identity rules `d8a`)."""
    shard = (_remembered(lambda h: identity_shard(h, shards, True), _property_of) if by_property
             else _remembered(lambda h: identity_shard(h, shards), _join_key_of))
    names = shard_keys("i", shards)
    beat = heartbeat_s(settings)
    return PerWorker(lambda: Router(names, shard, beat),
                     lambda batch: ((hits, progress) for hits, _, progress in batch))


def to_sessions(shards: int, settings: Settings) -> Callable[[list], list]:
    """Identity output -> session shard items (by `(property_id, ACID)`, now final)."""
    shard = _remembered(lambda h: session_shard(h, shards), _session_key_of)
    names = shard_keys("s", shards)
    beat = heartbeat_s(settings)
    deadline = close_deadline(settings)
    return PerWorker(lambda: Router(names, shard, beat, deadline),
                     lambda batch: (v for _, v in batch))


def close_deadline(settings: Settings) -> Callable[[Any], int]:
    """The first clock at which the clock alone could close the proto-session
    a hit was stored in: the wheel bucket after its expiry
    (`CloseTrigger`); a later hit only moves that later. An `Evict` is due
    at once (it closes nothing)."""
    tick = settings.tick_us
    after = settings.session_duration_us + settings.allowed_lateness_us

    def deadline(h: Any) -> int:
        if h.__class__ is not Hit:
            return 0
        e = h.t + after
        if h.clock >= e:
            e = h.clock + 1
        return (e // tick + 1) * tick
    return deadline


class _Merging:
    """What both keyed steps share: hits held until the watermark of their
    upstream passes them (`protosessions.merge`), counted in the process's
    backlog, and in the snapshot so a resumed job continues the same order."""

    def __init__(self, resume: Optional[tuple]) -> None:
        self.marks = Watermark.restore(resume[0]) if resume else Watermark()
        self.buffer = MergeBuffer(list(resume[1]) if resume else [])
        self.index = resume[2] if resume else -1  # this shard's number, from its items
        backlog.add(len(self.buffer), -1)

    def take(self, values: list) -> tuple[list, bool]:
        """Buffer the items `(shard number, hits, progresses)`; the hits now
        ready, in key order, and whether any progress came."""
        buffer, marks = self.buffer, self.marks
        held = len(buffer)
        moved = False
        for index, hits, progresses in values:
            self.index = index
            if hits:
                buffer.add(hits)
            for progress in progresses:
                marks.update(progress)
                moved = True
        w = marks.watermark()
        ready = buffer.release(w)
        backlog.add(len(buffer) - held, w)
        return ready, moved

    def release_all(self) -> list:
        ready = self.buffer.release(END)
        backlog.add(-len(ready), END)
        return ready

    def merge_snapshot(self) -> tuple:
        return (self.marks.snapshot(), tuple(self.buffer.pending), self.index)


def check_snapshot(step: str, snap: tuple, directory: Optional[str] = None) -> None:
    """Load a snapshot of a keyed step as a resume would, raising what a
    resume would raise (for the check before a resume, `flows.recovery`).
    A store snapshot's marker is checked against its shard's state store
    in `directory`, read only (the store's rows are checked on their own)."""
    shard, merge = snap
    if isinstance(shard, tuple) and len(shard) > 3 and shard[2] == "store":
        if step == "identity":
            ClaimTable.restore((*shard[:2], (), shard[-1]))  # its version and fields
        else:
            check_version(shard)
        if directory is None:
            raise ValueError(f"a {step} step's snapshot of a state store, checked without the store")
        from .state_store import check_marker_in
        check_marker_in(directory, step, merge[2], shard[3])
    elif step == "identity":
        ClaimTable.restore(shard)
    else:
        ShardState.restore(shard)
    Watermark.restore(merge[0])
    MergeBuffer(list(merge[1]))


class IdentityLogic(_Merging, StatefulBatchLogic[tuple, tuple, tuple]):
    """One identity shard: rewrites ACIDs, in merge order, then passes the
    hits and its own progress (its watermark and clock) on to every session
    shard. Kept for the whole run: its watermark is needed even when it holds
    no claim."""

    def __init__(self, settings: Settings, resume: Optional[tuple], finite: bool,
                 shards: int, snapshots: bool = True,
                 stores: Optional["ShardStores"] = None) -> None:
        _Merging.__init__(self, resume[1] if resume else None)
        self.settings = settings
        # with a state store, snapshots write the changed claims there, as the session shards do
        self.stores = stores if snapshots else None
        store = self.stores.open(self.index) if self.stores and resume else None
        self._collected = [time.monotonic()]
        self.shard = IdentityShard(settings, resume[0] if resume else None, store,
                                   track=self.stores is not None)
        self.finite = finite
        self.shards = shards
        self.snapshots = snapshots
        self._sent: Optional[tuple] = None  # progress last passed on (resent after a restore)

    def on_batch(self, values: list[tuple]) -> tuple[list, bool]:
        ready, _ = self.take(values)
        return self._pass_on(ready, self.marks.watermark()), self.RETAIN

    def _pass_on(self, ready: list, w: int) -> list:
        out = self.shard.on_hits(ready) if ready else []
        clock = self.marks.clock()
        self.shard.tick(clock)
        progress = None
        if (w, clock) != self._sent:
            self._sent = (w, clock)
            progress = (self.index, w, w >= END, self.shards, clock)
        return [(out, progress)] if out or progress is not None else []

    def on_notify(self) -> tuple[list, bool]:
        self.shard.tick(self.marks.clock())
        return [], self.RETAIN

    def on_eof(self) -> tuple[list, bool]:
        if not self.finite or stop.requested():  # stopped: what waits is in the snapshot
            return [], self.RETAIN
        return self._pass_on(self.release_all(), END), self.RETAIN

    def notify_at(self) -> Optional[datetime]:
        """Never: only progress moves this step's clock, and it comes as items
        (lapsed claims are forgotten when the shard next hears of it)."""
        return None

    def snapshot(self) -> Optional[tuple]:
        if not self.snapshots:
            return None
        if self.stores is not None and self.shard.store is None and self.index >= 0:
            self.shard.store = self.stores.open_fresh(self.index)  # once its number is known
        snap = (self.shard.snapshot(), self.merge_snapshot())  # whole while it has no store
        if self.shard.store is not None:
            self.stores.maybe_collect(self.shard.store, self.index, self._collected)
        return snap


class SessionLogic(_Merging, StatefulBatchLogic[tuple, Any, tuple]):
    """One session shard: the middleware chain on its hits in merge order,
    clock-driven closes as the merge clock moves (every shard learns it from
    the progress of the identity shards), and at the end of a finite input
    everything closed. Kept for the whole run, for its watermark."""

    def __init__(self, settings: Settings, clock: Clock, resume: Optional[tuple],
                 finite: bool, snapshots: bool = True,
                 stores: Optional["ShardStores"] = None, budget: int = 0) -> None:
        _Merging.__init__(self, resume[1] if resume else None)
        self.settings = settings
        self.finite = finite
        self.snapshots = snapshots
        self.clock = clock
        # With a state store, snapshots write changes there (`flows.state_store`);
        # a fresh shard opens its store at its first snapshot, once its number is known.
        self.stores = stores if snapshots else None
        store = self.stores.open(self.index) if self.stores and resume else None
        self._collected = [time.monotonic()]
        self.shard = SessionShard(settings, clock, resume[0] if resume else None, store, budget)
        self.following = clock.__class__ is WallFollowingClock
        if self.following:  # a restored clock runs on from now
            clock.mark(wall_now_us())  # type: ignore[attr-defined]
        metrics.watch_clock(clock)
        self._open = len(self.shard.state.sessions)
        stats.counter()["open"] += self._open

    def on_batch(self, values: list[tuple]) -> tuple[Iterable, bool]:
        ready, moved = self.take(values)
        if self.shard.state.budget and self.shard.state.store is None:
            self._open_store()  # a memory budget spills before the first snapshot too
        out = self.shard.on_hits(ready) if ready else []
        clock = self.marks.clock()
        if clock > self.clock.now:
            self.clock.advance(clock)
            out.extend(self.shard.tick())
        if self.following and (ready or moved):
            self.clock.mark(wall_now_us())  # type: ignore[attr-defined]
        return self._drain(out)

    def on_notify(self) -> tuple[Iterable, bool]:
        if self.following and self.marks.watermark() >= END:  # every partition caught up
            wall = wall_now_us()
            self.clock.follow(wall)  # type: ignore[attr-defined]
            catching_up.report(self.clock, wall, self.settings.tick_us)
        return self._drain(self.shard.tick())

    def on_eof(self) -> tuple[Iterable, bool]:
        if not self.finite or stop.requested():  # stopped: its state is in the snapshot
            return [], self.RETAIN
        out = self.shard.on_hits(self.release_all())
        self.clock.advance(self.marks.clock())
        out.extend(self.shard.close_all())
        return self._drain(out)

    def _drain(self, closed: list) -> tuple[list, bool]:
        c = stats.counter()
        st = self.shard.stats
        if st:
            c.update(st)
            st.clear()
        n = len(self.shard.state.sessions)
        if n != self._open:
            c["open"] += n - self._open
            self._open = n
        return closed, self.RETAIN

    def notify_at(self) -> Optional[datetime]:
        """Only streaming, with every partition caught up (else only progress,
        which comes as items, moves the clock): just when the idle clock
        passes the next wheel bucket, so a quiet stream's close is late by at
        most a tick. A shard with nothing open never wakes."""
        if not self.following or self.shard.empty or self.marks.watermark() < END:
            return None
        nb = self.shard.state.wheel.next_bucket()
        if nb is None:
            return None
        tick = self.settings.tick_us
        due = self.clock.wall_at((nb + 1) * tick)  # type: ignore[attr-defined]
        if not due:  # no anchor yet
            return _next_tick(tick)
        return datetime.fromtimestamp(max(due, wall_now_us()) / 1e6, timezone.utc)

    def _open_store(self) -> None:
        """A fresh shard's store, once its number is known."""
        if self.stores is not None and self.index >= 0:
            self.shard.state.store = self.stores.open_fresh(self.index)

    def snapshot(self) -> Optional[tuple]:
        if not self.snapshots:
            return None
        state = self.shard.state
        if self.stores is not None and state.store is None:
            self._open_store()
        snap = (self.shard.snapshot(), self.merge_snapshot())
        if self.stores is not None:
            self.stores.maybe_collect(state.store, self.index, self._collected)
        return snap


def _next_tick(tick_us: int) -> datetime:
    return datetime.now(timezone.utc) + timedelta(microseconds=tick_us)


class _CatchingUp:
    """Logs, at most every 10 s per process, how far the clock is behind wall
    time while a backlog is read (streaming)."""

    def __init__(self) -> None:
        self._last = 0.0
        self._lock = threading.Lock()

    def report(self, clock: Clock, wall: int, tick_us: int) -> None:
        behind = (wall - clock.now) // tick_us
        if behind < 3 or not clock.now:
            return
        now = time.monotonic()
        with self._lock:
            if now - self._last < 10:
                return
            self._last = now
        log.warning("catching up: %d buckets behind (clock %s, %.0f s behind wall time)",
                    behind, format_time_us(clock.now), (wall - clock.now) / 1e6)


catching_up = _CatchingUp()
