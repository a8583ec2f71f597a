"""The memory bound on hits held back by the time merge, per process.

A keyed step holds a hit until every partition that is neither ended nor
caught up has progressed past it. A partition far ahead of the others would
so fill memory with hits that wait; instead its reader pauses while this
process holds more than `limit` waiting hits, unless it is itself the
partition the merge waits for (its `M` at or below the watermark), so the
merge always moves on. The bound: `limit` waiting hits plus one batch per
partition read in this process (and what Bytewax has in flight).
"""

from __future__ import annotations

import threading


class Backlog:
    __slots__ = ("limit", "held", "peak", "watermark", "_lock")

    def __init__(self, limit: int = 200_000) -> None:
        self.limit = limit
        self.held = 0
        self.peak = 0  # the most hits held at once (reported by the benchmarks)
        self.watermark = -1  # the greatest watermark a step of this process has seen
        self._lock = threading.Lock()

    def reset(self, limit: int) -> None:
        """A new dataflow in this process."""
        with self._lock:
            self.limit = limit
            self.held = self.peak = 0
            self.watermark = -1

    def add(self, n: int, watermark: int) -> None:
        """A step now holds `n` more (or fewer) hits and knows `watermark`."""
        with self._lock:
            self.held += n
            if self.held > self.peak:
                self.peak = self.held
            if watermark > self.watermark:
                self.watermark = watermark

    def may_read(self, m: int) -> bool:
        """Whether a partition whose greatest hit time so far is `m` may read on."""
        return self.held < self.limit or m <= self.watermark


backlog = Backlog()
