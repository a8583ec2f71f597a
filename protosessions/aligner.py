"""Keeps the partitions of a hits topic level in hit time while a backlog is read.

The worker clock is the greatest hit time handled (SPEC rule 2). Reading a
backlog, a Kafka source takes batches of equal *counts* from each
partition; partitions of unequal volume then drift apart in *time*, the
clock follows the one furthest ahead, and hits of the others arrive late:
sessions are cut that in-order input would have kept whole (README, "Running
on Kafka", has the measurements). The aligner lets a partition be read only
while it is at most `max_skew` ahead of the slowest partition that still has
data, as Kafka Streams picks the partition with the oldest head record.
Partitions that are caught up (an empty poll) or finished do not hold the
others back, so a live stream is never slowed.
"""

from __future__ import annotations

import threading
from typing import Hashable

UNKNOWN = -1  # nothing read yet: the others wait for its first batch (or its idle grace)
IDLE_AFTER_S = 1.0  # empty polls for this long (wall time) = caught up, not a slow fetch


class PartitionAligner:
    """Hit-time progress of the partitions read in one process.

    An empty poll does not make a partition idle at once: its next fetch
    may simply not have arrived yet (at start-up, or behind a busy broker).
    Only after `IDLE_AFTER_S` of empty polls does it stop holding the others
    back; the first batch it reads puts it back in the race.
    """

    def __init__(self, max_skew_us: int, idle_after_s: float = IDLE_AFTER_S) -> None:
        self.max_skew_us = max_skew_us
        self.idle_after_s = idle_after_s
        self._progress: dict[Hashable, int | None] = {}  # None: idle
        self._empty_since: dict[Hashable, float] = {}
        self._lock = threading.Lock()

    def join(self, part: Hashable) -> None:
        with self._lock:
            self._progress[part] = UNKNOWN

    def leave(self, part: Hashable) -> None:
        with self._lock:
            self._progress.pop(part, None)
            self._empty_since.pop(part, None)

    def may_read(self, part: Hashable) -> bool:
        """False while `part` is more than `max_skew` ahead of the slowest busy partition."""
        with self._lock:
            mine = self._progress.get(part)
            if mine is None or mine == UNKNOWN:
                return True
            busy = [p for p in self._progress.values() if p is not None]
        return mine - min(busy) <= self.max_skew_us

    def read(self, part: Hashable, t: int | None) -> None:
        """`part` returned a batch whose latest hit time is `t` (None: none parsed)."""
        with self._lock:
            self._empty_since.pop(part, None)
            cur = self._progress.get(part)
            if t is not None and (cur is None or t > cur):
                self._progress[part] = t
            elif cur is None:
                self._progress[part] = UNKNOWN

    def empty(self, part: Hashable, now_s: float) -> None:
        """`part` had nothing to read at monotonic time `now_s`."""
        with self._lock:
            if part not in self._progress:
                return
            since = self._empty_since.setdefault(part, now_s)
            if now_s - since >= self.idle_after_s:
                self._progress[part] = None
