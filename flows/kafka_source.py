"""The hits topic as a source: one `confluent_kafka.Consumer` per partition.

Our own rather than Bytewax's `KafkaSource`: the time merge needs to know
when a partition is *caught up* (it has read up to the end offset the broker
last told it of: librdkafka's partition-EOF event), so that a live stream
never waits for a quiet partition. Offsets and the partition's `M` are in
the snapshots; consumer groups are not used.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any, Optional

from bytewax.inputs import FixedPartitionedSource
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient

from protosessions.config import Settings
from protosessions.timefmt import wall_now_us

from .kafka_admin import rate_limited_kafka_logger
from .sources import Batch, Raw, ReaderPartition

# How soon a drained partition is read again. A live stream's hits wait up
# to this long to be read, so that a poll reads IDLE's worth of them: the
# job's work per poll (one call per step, per shard a hit goes to) is paid
# per IDLE, not per hit or two, and an idle topic costs 1/IDLE polls a second.
IDLE = timedelta(milliseconds=50)
IDLE_US = IDLE // timedelta(microseconds=1)
METADATA_TIMEOUT_S = 10.0


class _Partition(ReaderPartition):
    def __init__(self, settings: Settings, config: dict[str, Any], topic: str, partition: int,
                 count: int, batch_size: int, tail: bool, resume: Optional[tuple]) -> None:
        super().__init__(settings, partition, count, resume)
        self._topic = topic
        self._partition = partition
        self._next = resume[0] if resume else OFFSET_BEGINNING  # offset of the next message
        self._batch = batch_size
        self._tail = tail
        self._caught_up = False  # the last event was the partition's end
        self._consumer = Consumer(config)
        self._consumer.assign([TopicPartition(topic, partition, self._next)])

    def read_raw(self) -> tuple[list[Raw], bool, bool]:
        out: list[Raw] = []
        caught_up = self._caught_up  # nothing consumed: no news
        topic, partition = self._topic, self._partition
        for msg in self._consumer.consume(self._batch, 0):
            err = msg.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    caught_up = True
                    if not self._tail:
                        break  # --until-end: the end known at this point ends the partition
                    continue
                raise KafkaException(err)
            offset = msg.offset()
            out.append((offset, msg.value() or b"", (topic, partition, offset)))
            self._next = offset + 1
            caught_up = False
        self._caught_up = caught_up
        return out, caught_up and not self._tail, caught_up

    def drained(self, read: int) -> bool:
        """A read short of a whole batch had all the partition held."""
        return read < self._batch

    def idle_until(self) -> Optional[datetime]:
        """The next multiple of IDLE in wall time: every drained partition of
        the process is read again at the same moment, so one activation of
        the dataflow carries all their hits (fewer, fuller calls)."""
        step = IDLE_US
        return datetime.fromtimestamp((wall_now_us() // step + 1) * step / 1e6, timezone.utc)

    def position(self) -> int:
        return self._next

    def close(self) -> None:
        self._consumer.close()


class HitsSource(FixedPartitionedSource[Batch, tuple]):
    """Every partition of the hits topic, each one partition of the time
    merge (ties go to the lower partition number). `tail=False` ends each
    partition at the end it had when the job reached it (`--until-end`)."""

    def __init__(self, brokers: str, topic: str, config: dict[str, str], settings: Settings,
                 batch_size: int, tail: bool = True) -> None:
        self.brokers = brokers
        self.topic = topic
        self.config = config
        self.settings = settings
        self.batch_size = batch_size
        self.tail = tail
        self._parts: list[str] | None = None

    def _client_config(self) -> dict[str, Any]:
        return {"bootstrap.servers": self.brokers, **self.config,
                "logger": rate_limited_kafka_logger()}

    def list_parts(self) -> list[str]:
        meta = AdminClient(self._client_config()).list_topics(self.topic,
                                                              timeout=METADATA_TIMEOUT_S)
        t = meta.topics.get(self.topic)
        if t is None or t.error is not None or not t.partitions:
            why = t.error.str() if t is not None and t.error is not None else "no partitions"
            raise RuntimeError(f"hits topic {self.topic!r} on {self.brokers}: {why}")
        self._parts = [str(p) for p in sorted(t.partitions)]
        return self._parts

    def build_part(self, step_id: str, for_part: str, resume_state: Optional[tuple]) -> _Partition:
        config = {**self._client_config(), "group.id": "protosessions-unused",
                  "enable.auto.commit": False, "enable.partition.eof": True}
        count = len(self._parts or self.list_parts())
        return _Partition(self.settings, config, self.topic, int(for_part), count,
                          self.batch_size, self.tail, resume_state)
