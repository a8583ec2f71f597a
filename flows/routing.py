"""Who gets an item between two steps: each hit goes to the one shard that
owns it, and upstream progress (SPEC rule 2's watermark and clock) goes to a
shard only when it can change what that shard does.

A keyed step's shard needs its upstream's progress for two things: to
release the hits it holds for the merge (every source past their key) and
to move its clock (clock-driven closes, SPEC rule 3). Sending every batch's
progress to every shard made a live stream pay a Python call per shard per
poll. A `Router` (one per worker and step) remembers what it told each shard
and tells it again when:

- the shard gets hits (the progress rides with them);
- a source is heard of for the first time, or one becomes done (ended or
  caught up) or stops being done: what holds the merge back changed;
- the watermark passes hits this router sent the shard that it may still
  hold (its own sources' part of the shard's watermark);
- the clock reaches the earliest moment at which a hit this router sent
  could be closed by the clock alone (`deadline`: the wheel bucket after
  the hit's expiry), so a close is not emitted later than before;
- `heartbeat_s` of wall time passed since it last told every shard: what a
  shard has heard from other workers' routers, and a quiet shard's
  wall-following anchor, are never older than that.

So a shard that gets no hit still learns the merge clock in time to close
what it holds; one with nothing held and nothing due is left alone.
"""

from __future__ import annotations

import heapq
import time
from operator import attrgetter
from typing import Any, Callable, Iterable, Optional

from protosessions.hit import HitBatch
from protosessions.merge import END
from protosessions.perthread import PerThread

BY_ORDER = attrgetter("order")
_M_BYTES = 8  # a merge key starts with its M, 8 bytes big-endian (protosessions.merge)
_NONE = HitBatch()  # no hits for a shard (never appended to)


def _watermark(latest: dict) -> int:
    """The least `M` still to come from this router's sources (END: all done)."""
    w = END
    for _, m, done, _, _ in latest.values():
        if not done and m < w:
            w = m
    return w


def _below(w: int) -> Optional[bytes]:
    """The least merge key with `M` = `w` (None past every key: all done)."""
    if w >= END:
        return None
    return w.to_bytes(_M_BYTES, "big") if w > 0 else b""


def _clock(latest: dict, w: int) -> int:
    return min(w, max(p[4] for p in latest.values())) if latest else 0


class Router:
    """What one worker tells each shard of one step (see the module doc)."""

    def __init__(self, names: tuple[str, ...], shard: Callable[[Any], int],
                 heartbeat_s: float, deadline: Optional[Callable[[Any], int]] = None) -> None:
        self.names = names
        self.shard = shard
        self.heartbeat_s = heartbeat_s
        self.deadline = deadline
        self.latest: dict[int, tuple] = {}  # source -> its latest progress
        self.told: list[dict[int, tuple]] = [{} for _ in names]  # shard -> source -> progress
        self.held: dict[int, bytes] = {}  # shard -> greatest key it may still hold from us
        # clock -> the shards with a hit closable from then, as a bit mask (a set of
        # 64 shards is 2 KiB, and a long session duration keeps one a second)
        self.due: dict[int, int] = {}
        self.due_heap: list[int] = []
        self.last_w = -1  # the watermark of our sources when last routed
        self.beat_at = 0.0  # monotonic time of the next heartbeat
        self.beat_pending = False  # progress came since the last heartbeat

    def route(self, parts: Iterable[tuple[list, Optional[tuple]]]) -> list:
        """`(routing key, (shard number, hits, progresses))` items for a batch
        of upstream `(hits, progress or None)` parts."""
        names, latest, told = self.names, self.latest, self.told
        groups: dict[int, list] = {}
        everyone = False
        moved = False
        single = len(names) == 1
        shard = self.shard
        for hits, progress in parts:
            if progress is not None:
                old = latest.get(progress[0])
                if old is not progress:
                    latest[progress[0]] = progress
                    moved = True
                    if old is None or old[2] != progress[2]:
                        everyone = True  # first heard of, or done changed
            if not hits:
                continue
            if single:
                groups.setdefault(0, HitBatch()).extend(hits)
                continue
            for h in hits:
                i = shard(h)
                g = groups.get(i)
                if g is None:
                    groups[i] = HitBatch((h,))
                else:
                    g.append(h)
        if moved:
            self.beat_pending = True
        if not groups and not moved:
            return []
        w = _watermark(latest)
        now = time.monotonic()
        if self.beat_pending and now >= self.beat_at:
            everyone = True
        if everyone:
            self.beat_at = now + self.heartbeat_s
            self.beat_pending = False
        tell: set[int] = set()
        if moved:
            due = self._due(_clock(latest, w))
            if not everyone:
                tell.update(due)
                if w != self.last_w:
                    tell.update(self._released(w))
        self.last_w = w
        held = self.held
        below = _below(w)
        deadline = self.deadline
        for i, g in groups.items():
            top = max(map(BY_ORDER, g))
            if below is not None and top >= below:  # may wait for the merge at the shard
                if top > held.get(i, b""):
                    held[i] = top
            if deadline is not None:
                self._arm(i, g, deadline)
        out = []
        for i in (range(len(names)) if everyone else tell.union(groups)):
            t = told[i]
            diff = tuple(p for s, p in latest.items() if t.get(s) is not p)
            hits = groups.get(i, _NONE)
            if not diff and not hits:
                continue
            for p in diff:
                t[p[0]] = p
            out.append((names[i], (i, hits, diff)))
        if everyone:
            if below is None:
                held.clear()
            else:
                for i in [i for i, top in held.items() if top < below]:
                    del held[i]
        return out

    def _released(self, w: int) -> list[int]:
        """Shards holding hits from us that the watermark `w` now passes (or,
        for the rest of a batch, gets closer to: told on every move until
        passed)."""
        held = self.held
        if not held:
            return []
        if w >= END:
            out = list(held)
            held.clear()
            return out
        below = _below(w)
        out = []
        for i, top in list(held.items()):
            out.append(i)
            if top < below:
                del held[i]
        return out

    def _arm(self, i: int, hits: list, deadline: Callable[[Any], int]) -> None:
        due, heap = self.due, self.due_heap
        bit = 1 << i
        for d in {deadline(h) for h in hits}:
            m = due.get(d)
            if m is None:
                due[d] = bit
                heapq.heappush(heap, d)
            else:
                due[d] = m | bit

    def _due(self, clock: int) -> set[int]:
        """Shards with a hit the clock alone may now close."""
        heap, due = self.due_heap, self.due
        m = 0
        while heap and heap[0] <= clock:
            m |= due.pop(heapq.heappop(heap))
        out: set[int] = set()
        while m:
            low = m & -m
            out.add(low.bit_length() - 1)
            m ^= low
        return out


class PerWorker:
    """A step's routing function: one `Router` per worker thread (workers of
    a process share this function object, not their routers)."""

    def __init__(self, make: Callable[[], Router],
                 parts: Callable[[list], Iterable[tuple[list, Optional[tuple]]]]) -> None:
        self._routers = PerThread(make)
        self._parts = parts

    def __call__(self, batch: list) -> list:
        return self._routers.get().route(self._parts(batch))
