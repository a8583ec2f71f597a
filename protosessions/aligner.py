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
others back, so a live stream is never slowed. Partitions read by other
processes take part through `remote` (their progress as those processes
publish it, see `flows.progress`); an entry not refreshed for
`STALE_AFTER_S` is ignored, so a dead or silent peer holds nobody back.
"""

from __future__ import annotations

import threading
import time

UNKNOWN = -1  # nothing read yet: the others wait for its first batch (or its idle grace)
IDLE_AFTER_S = 1.0  # empty polls for this long (wall time) = caught up, not a slow fetch
STALE_AFTER_S = 2.0  # a peer's progress older than this (wall time) is ignored
STARTUP_GRACE_S = 5.0  # how long partitions of peers not heard from yet hold the others back


class PartitionAligner:
    """Hit-time progress of the partitions read in one process.

    An empty poll does not make a partition idle at once: its next fetch
    may simply not have arrived yet (at start-up, or behind a busy broker).
    Only after `IDLE_AFTER_S` of empty polls does it stop holding the others
    back; the first batch it reads puts it back in the race.
    """

    def __init__(self, max_skew_us: int, idle_after_s: float = IDLE_AFTER_S,
                 max_peer_skew_us: int | None = None) -> None:
        self.max_skew_us = max_skew_us
        # Peers' progress arrives a publishing period late: a tight bound
        # would have every process wait for the others' next message.
        self.max_peer_skew_us = max_skew_us if max_peer_skew_us is None else max_peer_skew_us
        self.idle_after_s = idle_after_s
        self._progress: dict[str, int | None] = {}  # None: idle
        self._empty_since: dict[str, float] = {}
        self._remote: dict[str, tuple[float, dict[str, int | None]]] = {}  # peer -> (when, progress)
        self._expected: set[str] = set()  # every partition of the topic, by name
        self._peers = False  # peers publish their progress (`use_peers`)
        self._done: set[str] = set()  # finished here
        self._expect_until = 0.0
        self._lock = threading.Lock()

    def use_peers(self) -> None:
        """Peer processes publish their progress: until `expect`'s deadline,
        partitions none of them has reported yet hold this process back."""
        with self._lock:
            self._peers = True

    def expect(self, names: list[str], until_s: float) -> None:
        """Every partition of the topic: until monotonic time `until_s`, those
        neither read here nor published by a peer yet count as not yet read."""
        with self._lock:
            self._expected = set(names)
            self._expect_until = until_s

    def join(self, part: str) -> None:
        with self._lock:
            self._progress[part] = UNKNOWN

    def leave(self, part: str) -> None:
        with self._lock:
            self._progress.pop(part, None)
            self._empty_since.pop(part, None)
            self._done.add(part)

    def may_read(self, part: str, now_s: float | None = None) -> bool:
        """False while `part` is more than `max_skew` ahead of the slowest busy
        partition (here, or a peer's as last published before `now_s`)."""
        with self._lock:
            mine = self._progress.get(part)
            if mine is None or mine == UNKNOWN:
                return True
            busy = [p for p in self._progress.values() if p is not None]
            remote = (self._remote_busy(time.monotonic() if now_s is None else now_s)
                      if self._peers or self._remote else [])
        return (mine - min(busy) <= self.max_skew_us
                and (not remote or mine - min(remote) <= self.max_peer_skew_us))

    def _remote_busy(self, now_s: float) -> list[int]:
        fresh = {name: t for when, parts in self._remote.values() if now_s - when < STALE_AFTER_S
                 for name, t in parts.items() if name not in self._progress}
        busy = [t for t in fresh.values() if t is not None]
        if self._peers and now_s < self._expect_until and any(
                name not in self._progress and name not in fresh and name not in self._done
                for name in self._expected):
            busy.append(UNKNOWN)
        return busy

    def local(self) -> dict[str, int | None]:
        """Progress of this process's partitions (by name), to publish to peers."""
        with self._lock:
            return dict(self._progress)

    def remote(self, peer: str, parts: dict[str, int | None], now_s: float) -> None:
        """Progress a peer process published for its partitions, received at `now_s`."""
        with self._lock:
            self._remote[peer] = (now_s, parts)

    def read(self, part: str, t: int | None) -> None:
        """`part` returned a batch whose latest hit time is `t` (None: none parsed)."""
        with self._lock:
            self._empty_since.pop(part, None)
            cur = self._progress.get(part)
            if t is not None and (cur is None or t > cur):
                self._progress[part] = t
            elif cur is None:
                self._progress[part] = UNKNOWN

    def empty(self, part: str, now_s: float) -> None:
        """`part` had nothing to read at monotonic time `now_s`."""
        with self._lock:
            if part not in self._progress:
                return
            since = self._empty_since.setdefault(part, now_s)
            if now_s - since >= self.idle_after_s:
                self._progress[part] = None
