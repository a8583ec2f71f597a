"""A lazy timing wheel: keys filed under integer buckets, taken out once the
clock's bucket passes them.

Entries are never removed when a key moves to a later bucket or goes away;
the owner tells stale entries apart (each entity remembers its own current
bucket), which keeps scheduling at one list append per move.
"""

from __future__ import annotations

import heapq
from typing import Hashable, Iterator


class TimingWheel:
    __slots__ = ("buckets", "heap")

    def __init__(self) -> None:
        self.buckets: dict[int, list[Hashable]] = {}
        self.heap: list[int] = []

    def schedule(self, key: Hashable, bucket: int) -> None:
        keys = self.buckets.get(bucket)
        if keys is None:
            self.buckets[bucket] = [key]
            heapq.heappush(self.heap, bucket)
        else:
            keys.append(key)

    def due(self, current_bucket: int) -> Iterator[tuple[int, Hashable]]:
        """`(bucket, key)` for every entry in buckets before `current_bucket`."""
        heap, buckets = self.heap, self.buckets
        while heap and heap[0] < current_bucket:
            b = heapq.heappop(heap)
            for key in buckets.pop(b):
                yield b, key

    def next_bucket(self) -> int | None:
        return self.heap[0] if self.heap else None

    def __len__(self) -> int:
        return len(self.heap)
