"""What every input partition does: read raw hits in order, validate and stamp
them with their merge key (`protosessions.merge.PartitionReader`), and report
the partition's progress with each batch.

A source emits one item per batch: `(hits, dead letters, progress)`, where
progress is None when it did not change. A reader pauses while the process
holds too many hits back for the merge (`flows.backlog`), and stops reading
when the job is asked to stop (`flows.stop`): then it reports nothing more,
so a resumed job continues the very same merge.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any, Optional

from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition

from protosessions import stats
from protosessions.clock import Clock
from protosessions.config import Settings
from protosessions.merge import PartitionReader
from protosessions.timefmt import wall_now_us

from . import metrics, stop
from .backlog import backlog

Batch = tuple  # (hits, dead letters, progress or None)
Raw = tuple  # (offset in the partition, raw bytes, location for a dead letter)

PAUSE = timedelta(milliseconds=5)  # how soon a paused reader looks again


class ReaderPartition(StatefulSourcePartition[Batch, tuple]):
    """A partition read in order. Subclasses implement `read_raw` and `position`.

    Snapshot: `(position, M)`.
    """

    def __init__(self, settings: Settings, index: int, count: int,
                 resume: Optional[tuple]) -> None:
        self.reader = PartitionReader(settings, index, count, resume[1] if resume else 0)
        self.read_clock = Clock(self.reader.m)  # the greatest hit time read, for the lag gauge
        metrics.watch_clock(self.read_clock, "read")
        self._wait: Optional[datetime] = None
        self._ended = False

    def read_raw(self) -> tuple[list[Raw], bool, bool]:
        """`(raw items, ended, caught up)`: the next raw hits of the partition;
        `ended` once a finite partition has nothing more, `caught up` when a
        streaming one has nothing more for now."""
        raise NotImplementedError

    def position(self) -> Any:
        raise NotImplementedError

    def next_batch(self) -> list[Batch]:
        if self._ended or stop.requested():
            raise StopIteration()
        if self.reader.reported and not backlog.may_read(self.reader.m):
            self._wait = datetime.now(timezone.utc) + PAUSE
            return []
        raws, ended, caught_up = self.read_raw()
        hits, dead = self.reader.read(raws, wall_now_us())
        c = stats.counter()
        c["hits_read"] += len(raws)
        if dead:
            c["dead_letters"] += len(dead)
            for d in dead:
                c["dead:" + d.reason] += 1
        progress = self.reader.progress(ended or caught_up)
        self.read_clock.now = self.reader.m
        self._ended = ended
        self._wait = None if ended or not self.drained(len(raws)) else self.idle_until()
        if not hits and not dead and progress is None:
            return []
        return [(hits, dead, progress)]

    def drained(self, read: int) -> bool:
        """Whether a read of `read` raw items left nothing to read for now
        (then the next read waits for `idle_until`)."""
        return not read

    def idle_until(self) -> Optional[datetime]:
        """When to look again after a read that drained the partition (None: at once)."""
        return None

    def next_awake(self) -> Optional[datetime]:
        return self._wait

    def snapshot(self) -> tuple:
        return (self.position(), self.reader.m)


class _ListPartition(ReaderPartition):
    def __init__(self, settings: Settings, index: int, count: int, items: list[tuple],
                 batch_size: int, resume: Optional[tuple]) -> None:
        super().__init__(settings, index, count, resume)
        self._items = items
        self._pos = resume[0] if resume else 0
        self._batch = batch_size

    def read_raw(self) -> tuple[list[Raw], bool, bool]:
        take = self._items[self._pos:self._pos + self._batch]
        start = self._pos
        self._pos += len(take)
        return ([(start + i, raw, loc) for i, (loc, raw) in enumerate(take)],
                self._pos >= len(self._items), False)

    def position(self) -> int:
        return self._pos


class ListSource(FixedPartitionedSource[Batch, tuple]):
    """In-memory partitions of `(location, raw)` items, each read in its order
    (for tests: the partitioned inputs of the golden cases)."""

    def __init__(self, partitions: list[list[tuple]], settings: Settings,
                 batch_size: int = 7) -> None:
        self.partitions = partitions
        self.settings = settings
        self.batch_size = batch_size

    def list_parts(self) -> list[str]:
        return [str(i) for i in range(len(self.partitions))]

    def build_part(self, step_id: str, for_part: str, resume_state: Optional[tuple]
                   ) -> _ListPartition:
        i = int(for_part)
        return _ListPartition(self.settings, i, len(self.partitions), self.partitions[i],
                              self.batch_size, resume_state)
