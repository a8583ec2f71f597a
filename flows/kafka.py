"""Kafka output (the input is `flows.kafka_source`).

Output is our own sink: Bytewax's `KafkaSink` never looks at delivery
reports, so a failed produce would vanish. `DeliveredKafkaSink` produces a
batch, flushes, and raises if any message of it was not delivered, which
fails the worker so that recovery replays the batch instead of losing it.
"""

from __future__ import annotations

from typing import Any, Optional

from bytewax.outputs import DynamicSink, StatelessSinkPartition
from confluent_kafka import KafkaError, Producer

from protosessions import stats
from protosessions.closer import Requeue

from . import stop
from .kafka_admin import rate_limited_kafka_logger

PRODUCER_DEFAULTS = {
    "enable.idempotence": True,  # no duplicates or reordering from retries
    "acks": "all",
    "linger.ms": 5,
    "compression.type": "lz4",
    "message.max.bytes": 16 * 1024 * 1024,  # a session can hold many hits
}


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
        with stop.writing():
            self._write_batch(items)

    def _write_batch(self, items: list[Any]) -> None:
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


__all__ = ["DeliveredKafkaSink", "DeliveryError"]
