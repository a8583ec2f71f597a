"""The time merge of partitions (SPEC rule 2), computed locally.

Each valid hit gets the key `(M, partition, offset)` (packed in 20 bytes,
`merge_key`), `M` being the greatest
hit time of its partition up to and including it; the merge of the
partitions is exactly the order of these keys, and the clock when a hit is
handled is its `M`. So a partition's reader stamps each hit with its key
(`PartitionReader`), and a keyed step handles its share of the hits in key
order once every partition that is neither ended nor caught up has
progressed past them (`Watermark`, `MergeBuffer`). No step sees every hit.
"""

from __future__ import annotations

import struct
from bisect import bisect_left
from operator import attrgetter
from typing import Any, Iterable, Sequence

from .config import Settings
from .hit import DeadLetter, Hit, parse_hit, source_dict

END = 1 << 62  # a watermark past every hit time: everything upstream has ended

# What a reader or a step tells the next step about its progress:
# `(source number, M, done, number of sources, clock)`. `done` is "ended or
# caught up": such a source holds nothing back. A reader's clock is its `M`;
# a step's is the merge clock it has reached.
Progress = tuple

BY_ORDER = attrgetter("order")

# A merge key `(M, partition, offset)` is packed big-endian in 20 bytes, which
# order as the tuple would (all non-negative; partition < 2**32): compared in
# C, not tracked by the cyclic GC as a tuple is, and carried in a hit batch's
# MessagePack value (which takes no integer past 64 bits).
_KEY = struct.Struct(">QIQ")
_M_PREFIX = struct.Struct(">Q")
merge_key = _KEY.pack


def key_m(order: bytes) -> int:
    """The `M` of a merge key."""
    return _M_PREFIX.unpack_from(order)[0]


def _below(watermark: int) -> bytes:
    """The least merge key whose `M` is `watermark` (`watermark` >= 0): a key
    sorts before it exactly when its `M` is below the watermark."""
    return _M_PREFIX.pack(watermark)


class PartitionReader:
    """Validates a partition's raw hits in read order and stamps each valid
    one with its merge key and clock. `M` is part of the partition's
    snapshot, so a resumed reader stamps the very same keys."""

    __slots__ = ("settings", "index", "count", "m", "_sent")

    def __init__(self, settings: Settings, index: int, count: int, m: int = 0) -> None:
        self.settings = settings
        self.index = index  # this partition's number in the merge (ties: lower first)
        self.count = count  # how many partitions the merge has
        self.m = m
        self._sent: tuple | None = None  # progress last reported

    def read(self, items: Iterable[tuple[int, bytes, Any]], wall_us: int | None
             ) -> tuple[list[Hit], list[DeadLetter]]:
        """`(offset, raw, location)` items -> stamped hits and dead letters.
        Dead letters take no part in the merge: they never move `M`."""
        settings, index = self.settings, self.index
        m = self.m
        key = merge_key
        hits: list[Hit] = []
        dead: list[DeadLetter] = []
        for offset, raw, loc in items:
            hit = parse_hit(raw, settings, wall_us, m)
            if hit.__class__ is Hit:
                m = hit.clock  # type: ignore[union-attr]
                hit.order = key(m, index, offset)
                hits.append(hit)  # type: ignore[arg-type]
            else:
                dead.append(DeadLetter(hit, raw, source_dict(loc)))  # type: ignore[arg-type]
        self.m = m
        return hits, dead

    def progress(self, done: bool) -> Progress | None:
        """This partition's progress if it changed since last reported, else None."""
        p = (self.index, self.m, done, self.count, self.m)
        if p == self._sent:
            return None
        self._sent = p
        return p

    @property
    def reported(self) -> bool:
        """Whether the steps have heard of this partition: until then it
        holds the whole merge back, so it must never be paused."""
        return self._sent is not None


class Watermark:
    """What a step knows of its upstream sources' progress.

    `watermark()`: every hit still to come from an upstream that is neither
    done nor caught up has `M` at least this (END once all are done, -1
    while some source was never heard of). `clock()`: the merge clock this
    step may assume, never beyond a hit still to come.
    """

    __slots__ = ("marks", "expected", "_w", "_clock")

    def __init__(self) -> None:
        self.marks: dict[int, tuple[int, bool, int]] = {}
        self.expected = 0
        self._w: int | None = None  # watermark() and clock() until the next update
        self._clock = 0

    def update(self, p: Progress) -> None:
        source, m, done, count, clock = p
        mark = (m, done, clock)
        if self.marks.get(source) != mark or count != self.expected:
            self.marks[source] = mark
            self.expected = count
            self._w = None

    def watermark(self) -> int:
        w = self._w
        if w is None:
            w = self._compute()
        return w

    def clock(self) -> int:
        """`min(watermark, greatest clock upstream)`: the greatest `M` read
        is the clock once everything before the watermark has been handled."""
        if self._w is None:
            self._compute()
        return self._clock

    def _compute(self) -> int:
        """Both figures at once, kept until the marks change (a keyed step
        asks for them several times a batch)."""
        marks = self.marks
        w = END
        top = 0
        for m, done, c in marks.values():
            if not done and m < w:
                w = m
            if c > top:
                top = c
        if len(marks) < self.expected or not marks:
            w = -1
        self._clock = max(0, min(w, top)) if marks else 0
        self._w = w
        return w

    def snapshot(self) -> tuple:
        return (self.expected, tuple(self.marks.items()))

    @classmethod
    def restore(cls, snap: tuple) -> "Watermark":
        """Restored sources count as not done (nor caught up) until they say
        so again: a resumed job may have a backlog to read first."""
        w = cls()
        w.expected = snap[0]
        w.marks = {source: (m, False, c) for source, (m, _, c) in snap[1]}
        w._w = None
        return w


class MergeBuffer:
    """Hits waiting for the watermark, released in key order.

    Kept as sorted runs, one a batch added (a batch in order after the last
    run extends it): a release cuts each run where `M` reaches the
    watermark. So a hit is sorted once when it arrives and once when it
    leaves, however many batches it waits for a slower partition, instead
    of once a batch. Equal keys (an `Evict` and the hit that caused it)
    keep their arrival order."""

    __slots__ = ("runs", "size")

    MAX_RUNS = 32  # then the runs are merged into one

    def __init__(self, pending: list[Hit] | None = None) -> None:
        self.runs: list[list[Hit]] = []
        self.size = 0
        if pending:
            self.add(pending)

    def __len__(self) -> int:
        return self.size

    @property
    def pending(self) -> list[Hit]:
        """Every held hit (for snapshots: a restore sorts them again)."""
        return [h for run in self.runs for h in run]

    def add(self, hits: list[Hit]) -> None:
        run = sorted(hits, key=BY_ORDER)  # runs already in order: near-linear
        if not run:
            return
        runs = self.runs
        self.size += len(run)
        if runs and runs[-1][-1].order <= run[0].order:
            runs[-1].extend(run)
        elif len(runs) < self.MAX_RUNS:
            runs.append(run)
        else:
            whole = [h for r in runs for h in r]
            whole.extend(run)
            whole.sort(key=BY_ORDER)
            self.runs = [whole]

    def release(self, watermark: int) -> list[Hit]:
        """Every hit with `M` below the watermark, in key order. A hit with
        `M` equal to it waits: another partition may still read a hit with
        the same `M` and a lower partition number."""
        if not self.size or watermark <= 0:  # every M is >= 0
            return []
        everything = watermark >= END
        below = b"" if everything else _below(watermark)
        parts: list[list[Hit]] = []
        keep: list[list[Hit]] = []
        for run in self.runs:
            if everything or run[-1].order < below:
                parts.append(run)
                continue
            cut = bisect_left(run, below, key=BY_ORDER)  # first hit with M >= watermark
            if cut:
                parts.append(run[:cut])
                del run[:cut]
            keep.append(run)
        self.runs = keep
        if not parts:
            return []
        if len(parts) == 1:
            out = parts[0]
        else:
            out = [h for part in parts for h in part]
            out.sort(key=BY_ORDER)
        self.size -= len(out)
        return out


def merged(partitions: Sequence[Sequence[bytes]], settings: Settings) -> list[bytes]:
    """The valid raw hits of several partitions in time-merge order, head by
    head (SPEC rule 2, its first form): a reference for tests and for
    reading partitioned input as one file."""
    heads: list[list[tuple[int, bytes]]] = []
    for lines in partitions:
        valid = []
        for raw in lines:
            hit = parse_hit(raw, settings, None)
            if hit.__class__ is Hit:
                valid.append((hit.t, raw))  # type: ignore[union-attr]
        heads.append(valid)
    pos = [0] * len(heads)
    out: list[bytes] = []
    while True:
        best = -1
        for i, hs in enumerate(heads):
            if pos[i] < len(hs) and (best < 0 or hs[pos[i]][0] < heads[best][pos[best]][0]):
                best = i
        if best < 0:
            return out
        out.append(heads[best][pos[best]][1])
        pos[best] += 1
