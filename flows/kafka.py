"""Kafka input and output.

Input is Bytewax's `KafkaSource` (offsets live in the recovery snapshots).
Output is our own sink: Bytewax's `KafkaSink` never looks at delivery
reports, so a failed produce would vanish. `DeliveredKafkaSink` produces a
batch, flushes, and raises if any message of it was not delivered, which
fails the worker so that recovery replays the batch instead of losing it.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone
from typing import Any, Optional

from bytewax.connectors.kafka import KafkaSource, KafkaSourceMessage
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from bytewax.outputs import DynamicSink, StatelessSinkPartition
from confluent_kafka import KafkaError, Producer

from protosessions import stats
from protosessions.aligner import STARTUP_GRACE_S, PartitionAligner
from protosessions.closer import Requeue
from protosessions.hit import peek_time_us

from . import stop
from .kafka_admin import rate_limited_kafka_logger

PRODUCER_DEFAULTS = {
    "enable.idempotence": True,  # no duplicates or reordering from retries
    "acks": "all",
    "linger.ms": 5,
    "compression.type": "lz4",
    "message.max.bytes": 16 * 1024 * 1024,  # a session can hold many hits
}


def hits_source(brokers: str, topic: str, config: dict[str, str], batch_size: int,
                tail: bool = True, max_skew_us: int = 0,
                max_peer_skew_us: int | None = None) -> FixedPartitionedSource:
    """Bytewax's `KafkaSource` on the hits topic; with `max_skew_us` > 0 its
    partitions are kept level in hit time (see `protosessions.aligner`)."""
    source = KafkaSource([b.strip() for b in brokers.split(",") if b.strip()], [topic], tail=tail,
                         add_config=dict(config), batch_size=batch_size, raise_on_errors=True)
    return AlignedSource(source, max_skew_us, max_peer_skew_us) if max_skew_us > 0 else source


THROTTLE = timedelta(milliseconds=5)  # how soon a partition that is ahead is polled again


class _AlignedPartition(StatefulSourcePartition[Any, Any]):
    """A partition of the wrapped source that waits while it is ahead in hit time.

    It only delays reading, never holds messages back, so its snapshot
    (the wrapped partition's offset) stays exact for recovery.
    """

    def __init__(self, inner: StatefulSourcePartition, aligner: PartitionAligner,
                 name: str) -> None:
        self._inner = inner
        self._aligner = aligner
        self._name = name
        self._wait_until: Optional[datetime] = None
        aligner.join(name)

    def next_batch(self) -> list:
        name = self._name
        if stop.requested():  # SIGINT/SIGTERM: this partition's input ends here
            self._aligner.leave(name)
            raise StopIteration()
        if not self._aligner.may_read(name):
            self._wait_until = datetime.now(timezone.utc) + THROTTLE
            return []
        self._wait_until = None
        try:
            batch = list(self._inner.next_batch())
        except StopIteration:
            self._aligner.leave(name)
            raise
        if batch:
            self._aligner.read(name, peek_time_us(message_value(batch[-1])))
        else:
            self._aligner.empty(name, time.monotonic())
        return batch

    def next_awake(self) -> Optional[datetime]:
        return self._wait_until or self._inner.next_awake()

    def snapshot(self) -> Any:
        return self._inner.snapshot()

    def close(self) -> None:
        self._aligner.leave(self._name)
        self._inner.close()


class AlignedSource(FixedPartitionedSource[Any, Any]):
    """Wraps a partitioned source (Bytewax's `KafkaSource`); its partitions in
    one process share one `PartitionAligner`. Same partitions, same snapshots."""

    def __init__(self, inner: FixedPartitionedSource, max_skew_us: int,
                 max_peer_skew_us: int | None = None) -> None:
        self._inner = inner
        self.aligner = PartitionAligner(max_skew_us, max_peer_skew_us=max_peer_skew_us)

    def list_parts(self) -> list[str]:
        parts = self._inner.list_parts()
        self.aligner.expect(parts, time.monotonic() + STARTUP_GRACE_S)
        return parts

    def build_part(self, step_id: str, for_part: str, resume_state: Any) -> _AlignedPartition:
        return _AlignedPartition(self._inner.build_part(step_id, for_part, resume_state),
                                 self.aligner, for_part)


def message_value(m: KafkaSourceMessage) -> bytes:
    return m.value or b""


def message_location(m: KafkaSourceMessage) -> tuple[str, int, int]:
    """Where a rejected hit came from, for its dead letter."""
    return (m.topic, m.partition, m.offset)


MESSAGE = (message_value, message_location)  # how the parse step reads Kafka messages


class DeliveryError(RuntimeError):
    """A produced message was not delivered; the worker stops so recovery replays it."""


class _ProducerPartition(StatelessSinkPartition[Any]):
    def __init__(self, config: dict[str, Any], topic: str) -> None:
        self._producer = Producer({**config, "logger": rate_limited_kafka_logger()})
        self._topic = topic
        self._errors: list[KafkaError] = []
        self._delivered = 0
        self._counter = stats.delivered(topic)

    def _on_delivery(self, err: Optional[KafkaError], _msg: Any) -> None:
        if err is not None:
            self._errors.append(err)
        else:
            self._delivered += 1

    def write_batch(self, items: list[Any]) -> None:
        produce, poll = self._producer.produce, self._producer.poll
        topic, callback = self._topic, self._on_delivery
        for item in items:
            key, value = _key_value(item)
            while True:
                try:
                    produce(topic, value=value, key=key, on_delivery=callback)
                    break
                except BufferError:  # local queue full: let deliveries drain
                    poll(0.05)
        # Every message of the batch is acknowledged (or failed) before the
        # batch counts as written; librdkafka retries transient errors itself
        # until `delivery.timeout.ms`.
        while self._producer.flush(1.0):
            pass
        # Counted only now, acknowledged: the progress line shows what is written.
        stats.counter()[self._counter] += self._delivered
        self._delivered = 0
        if self._errors:
            err, self._errors = self._errors[0], []
            raise DeliveryError(f"Kafka delivery to {topic!r} failed: {err.str()} "
                                f"(code {err.code()}, fatal={err.fatal()}, "
                                f"retriable={err.retriable()})")

    def close(self) -> None:
        self._producer.flush(30)


def _key_value(item: Any) -> tuple[Optional[bytes], bytes]:
    if item.__class__ is Requeue:
        return item.key.encode(), item.value
    key, value = item
    return (key.encode() if key is not None else None), value


class DeliveredKafkaSink(DynamicSink[Any]):
    """Produces `(key str | None, value bytes)` items (or `Requeue`s) to one
    topic: idempotent producer, `acks=all`, every delivery report checked,
    delivered messages counted (`stats.delivered(topic)`)."""

    def __init__(self, brokers: str, topic: str, config: dict[str, str]) -> None:
        self._config: dict[str, Any] = {"bootstrap.servers": brokers, **PRODUCER_DEFAULTS}
        self._config.update(config)
        self._topic = topic

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _ProducerPartition:
        return _ProducerPartition(self._config, self._topic)


__all__ = ["MESSAGE", "AlignedSource", "DeliveredKafkaSink", "DeliveryError", "hits_source"]
