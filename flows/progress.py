"""Partition progress shared by the processes of one Bytewax cluster, through Kafka.

The partition aligner keeps the partitions read by one process level in hit
time. With several processes (the Kubernetes StatefulSet) each reads its own
partitions at its own pace, and once their hits meet at the identity and
session steps the clock follows the fastest one: a backlog read by 2
processes gave 4x the sessions. So each process publishes its partitions'
progress every `PERIOD_S` to `<hits topic>.progress` and feeds what its peers
publish into its aligner. Advisory only: without the topic (or with Kafka
slow) each process aligns its own partitions alone, as a single process does.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from typing import Any

import orjson
from confluent_kafka import OFFSET_END, Consumer, Producer, TopicPartition

from protosessions.aligner import PartitionAligner
from protosessions.topics import progress_topic

log = logging.getLogger("protosessions")

PERIOD_S = 0.05


class ProgressChannel:
    """Publishes this process's partition progress and reads its peers'."""

    def __init__(self, brokers: str, hits_topic: str, config: dict[str, str],
                 aligner: PartitionAligner) -> None:
        self.topic = progress_topic(hits_topic)
        self.aligner = aligner
        self.peer = uuid.uuid4().hex
        self._conf: dict[str, Any] = {"bootstrap.servers": brokers, **config}

    def start(self) -> bool:
        """Start the background thread; False (and a warning) without the topic."""
        consumer = Consumer({**self._conf, "group.id": "protosessions-progress-" + self.peer,
                             "enable.auto.commit": False})
        topic = consumer.list_topics(self.topic, timeout=10).topics.get(self.topic)
        if topic is None or topic.error is not None or not topic.partitions:
            consumer.close()
            log.warning("no topic %s: partitions read by other processes are not kept level "
                        "(`protosessions topics create` makes it)", self.topic)
            return False
        consumer.assign([TopicPartition(self.topic, p, OFFSET_END) for p in topic.partitions])
        self.aligner.use_peers()
        threading.Thread(target=self._run, args=(consumer,), name="protosessions-progress",
                         daemon=True).start()
        return True

    def _run(self, consumer: Consumer) -> None:
        producer = Producer({**self._conf, "linger.ms": 0})
        try:
            while True:  # a daemon thread: it ends with the process
                producer.produce(self.topic, orjson.dumps({"peer": self.peer,
                                                           "parts": self.aligner.local()}))
                producer.poll(0)
                for msg in consumer.consume(1000, PERIOD_S):
                    if msg.error() is not None:
                        continue
                    try:
                        data = orjson.loads(msg.value())
                    except orjson.JSONDecodeError:
                        continue
                    if data.get("peer") != self.peer:
                        self.aligner.remote(data["peer"], data["parts"], time.monotonic())
        except Exception as e:  # never take the job down: alignment is advisory
            log.warning("partition progress channel stopped: %s", e)
        finally:
            consumer.close()
            producer.flush(1)
