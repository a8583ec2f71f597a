"""The dataflow's steps: parse, identity, sessions. Thin wrappers that hand
batches to the library and tell Bytewax when to wake a key up or drop it."""

from __future__ import annotations

import logging
import threading
import time
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Iterable, Optional

from bytewax.operators import StatefulBatchLogic

from protosessions import stats
from protosessions.clock import Clock, WallFollowingClock
from protosessions.config import Settings
from protosessions.engine import IdentityShard, SessionShard, identity_shard, session_shard
from protosessions.hit import DeadLetter, Hit, parse_hit, source_dict
from protosessions.timefmt import format_time_us, wall_now_us

from . import metrics

log = logging.getLogger("protosessions")


class WorkerClocks:
    """The clocks of one dataflow: one per worker (thread) and step (SPEC rule 2).

    Made anew by each `build_flow`, so two runs in one thread share nothing.
    Streaming, the session step's clock also follows wall time while idle;
    with `skip_catching_up` it starts at wall time instead of where the
    snapshot left it.
    """

    def __init__(self, streaming: bool = False, skip_catching_up: bool = False,
                 idle_us: int = 1_000_000) -> None:
        self._local = threading.local()
        self.streaming = streaming
        self.skip_catching_up = skip_catching_up
        self.idle_us = idle_us

    def get(self, step: str) -> Clock:
        clocks = getattr(self._local, "clocks", None)
        if clocks is None:
            clocks = self._local.clocks = {}
        clock = clocks.get(step)
        if clock is None:
            if self.streaming and step == "sessions":
                wall = wall_now_us()
                clock = WallFollowingClock(wall if self.skip_catching_up else 0, wall,
                                           self.idle_us)
            else:
                clock = Clock()
            clocks[step] = clock
            if step in ("parse", "sessions"):
                metrics.watch_clock(clock, "read" if step == "parse" else "handled")
        return clock


def make_parse(settings: Settings, clocks: WorkerClocks,
               message: Optional[tuple[Callable[[Any], bytes], Callable[[Any], tuple]]] = None
               ) -> Callable[[list], list]:
    """Batch of input items -> one `(hits, dead letters)` item, in input order.

    Items are `(location, raw)`, or with `message=(value, location)` source
    messages read through those two functions (the location only for
    rejects, so Kafka messages are not re-packed one by one). Each hit is
    stamped with this worker's running clock, so membership of a late hit
    does not depend on how the keyed steps regroup batches. Hits travel
    between steps as lists, one item per batch and key group: Bytewax then
    pays its per-item cost per batch, not per hit.
    """

    def parse(batch: list) -> list:
        clock = clocks.get("parse")
        wall = wall_now_us()
        hits: list[Hit] = []
        dead: list[DeadLetter] = []
        c = stats.counter()
        raws = [raw for _, raw in batch] if message is None else list(map(message[0], batch))
        for i, raw in enumerate(raws):
            hit = parse_hit(raw, settings, wall, clock.now)
            if hit.__class__ is Hit:
                clock.advance(hit.t)
                hits.append(hit)
            else:
                loc = batch[i][0] if message is None else message[1](batch[i])
                dead.append(DeadLetter(hit, raw, source_dict(loc)))
                c["dead_letters"] += 1
                c["dead:" + hit] += 1
        c["hits_read"] += len(batch)
        return [(hits, dead)]

    return parse


def _grouped(hits: Iterable[Hit], key: Callable[[Hit], str]) -> list[tuple[str, list[Hit]]]:
    """`(key, hits of that key)` items, each list in arrival order."""
    groups: dict[str, list[Hit]] = {}
    for h in hits:
        k = key(h)
        g = groups.get(k)
        if g is None:
            groups[k] = [h]
        else:
            g.append(h)
    return list(groups.items())


def keyed_hits(shards: int) -> Callable[[list], list]:
    """`(hits, _)` items -> `(identity shard, hits)` items."""
    def route(batch: list) -> list:
        if shards == 1:
            return [("i0", hits) for hits, _ in batch if hits]
        return [kv for hits, _ in batch for kv in _grouped(hits, lambda h: identity_shard(h, shards))]
    return route


def dead_letters(key: str | None) -> Callable[[list], list]:
    """Rejects as `(key, dead-letter JSON)`."""
    def rejects(batch: list) -> list:
        return [(key, d.to_json()) for _, dead in batch for d in dead]
    return rejects


def rekey_by_session(shards: int) -> Callable[[list], list]:
    """After identity joining the ACID is final: hit lists regrouped by session shard."""
    def route(batch: list) -> list:
        return [kv for _, hits in batch for kv in _grouped(hits, lambda h: session_shard(h, shards))]
    return route


def _flat(values: list[list[Hit]]) -> list[Hit]:
    return values[0] if len(values) == 1 else [h for hits in values for h in hits]


def _next_tick(tick_us: int) -> datetime:
    return datetime.now(timezone.utc) + timedelta(microseconds=tick_us)


class IdentityLogic(StatefulBatchLogic[list[Hit], list[Hit], tuple]):
    """One identity shard: rewrites ACIDs. Kept even with no live claim, so
    its clock survives (there are only `--identity-shards` of them)."""

    def __init__(self, settings: Settings, resume: Optional[tuple], snapshots: bool = True) -> None:
        self.settings = settings
        self.shard = IdentityShard(settings, resume)
        self.snapshots = snapshots

    def on_batch(self, values: list[list[Hit]]) -> tuple[Iterable[list[Hit]], bool]:
        out = self.shard.on_hits(_flat(values))
        return ([out] if out else []), self.RETAIN

    def on_notify(self) -> tuple[Iterable[Hit], bool]:
        self.shard.tick()
        return [], self.RETAIN

    def on_eof(self) -> tuple[Iterable[Hit], bool]:
        return [], self.RETAIN

    def notify_at(self) -> Optional[datetime]:
        return None if self.shard.empty else _next_tick(max(self.settings.tick_us, 1_000_000))

    def snapshot(self) -> Optional[tuple]:
        return self.shard.snapshot() if self.snapshots else None


class SessionLogic(StatefulBatchLogic[list[Hit], Any, tuple]):
    """One session shard: the middleware chain on each batch, clock-driven
    closes on each tick, and (reading a finite input) everything closed at EOF.
    Dropped as soon as it holds no open proto-session."""

    def __init__(self, settings: Settings, clocks: WorkerClocks, resume: Optional[tuple],
                 finite: bool, snapshots: bool = True) -> None:
        self.settings = settings
        self.finite = finite
        self.snapshots = snapshots
        self.clock = clocks.get("sessions")
        self.shard = SessionShard(settings, self.clock, resume)
        if self.clock.__class__ is WallFollowingClock:  # a restored clock runs on from now
            self.clock.mark(wall_now_us())  # type: ignore[attr-defined]
        self._open = len(self.shard.state.sessions)
        stats.counter()["open"] += self._open

    def on_batch(self, values: list[list[Hit]]) -> tuple[Iterable, bool]:
        out = self.shard.on_hits(_flat(values))
        if self.clock.__class__ is WallFollowingClock:
            self.clock.mark(wall_now_us())  # type: ignore[attr-defined]
        return self._drain(out)

    def on_notify(self) -> tuple[Iterable, bool]:
        if self.clock.__class__ is WallFollowingClock:
            wall = wall_now_us()
            self.clock.follow(wall)  # type: ignore[attr-defined]
            catching_up.report(self.clock, wall, self.settings.tick_us)
        return self._drain(self.shard.tick())

    def on_eof(self) -> tuple[Iterable, bool]:
        if not self.finite:  # a stopped stream closes nothing: its state is in the snapshot
            return [], self.shard.empty
        return self._drain(self.shard.close_all())

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
        return closed, self.shard.empty

    def notify_at(self) -> Optional[datetime]:
        """Every tick; streaming, also just when an idle clock passes the next
        wheel bucket, so a quiet stream's close is late by at most a tick."""
        if self.shard.empty:
            return None
        tick = self.settings.tick_us
        nb = self.shard.state.wheel.next_bucket()
        if self.clock.__class__ is WallFollowingClock and nb is not None:
            due = self.clock.wall_at((nb + 1) * tick)  # type: ignore[attr-defined]
            now = wall_now_us()
            if due < now + tick:
                return datetime.fromtimestamp(max(due, now) / 1e6, timezone.utc)
        return _next_tick(tick)

    def snapshot(self) -> Optional[tuple]:
        return self.shard.snapshot() if self.snapshots else None


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
