"""Kafka benchmark floor: a bare Bytewax flow that only copies hits from one
topic to another, with the same source (the job's `HitsSource`, one consumer
a partition, `tail=False`: read to the end of the topic, then stop; here
without its parse: each batch is the raw values) and the same sink class
(`DeliveredKafkaSink`: idempotent, acks=all, flush + delivery check per batch)
as the real job. Records are written without a key.

    python bench/kafka_copy_flow.py BROKERS SRC_TOPIC DST_TOPIC [BATCH_SIZE]
"""

from __future__ import annotations

import sys
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # `flows` from a checkout

import bytewax.operators as op  # noqa: E402
from bytewax.dataflow import Dataflow  # noqa: E402
from bytewax.run import cli_main  # noqa: E402

from flows.kafka import DeliveredKafkaSink  # noqa: E402
from flows.kafka_source import HitsSource, _Partition  # noqa: E402
from protosessions.config import Settings  # noqa: E402

from floor_flow import RawBatches  # noqa: E402  (bench/ is on sys.path: run as a script)


class _RawPartition(RawBatches, _Partition):
    """The job's Kafka partition reader (consume, partition EOF, offsets), raw values."""


class RawHitsSource(HitsSource):
    def build_part(self, step_id: str, for_part: str, resume_state):
        config = {**self._client_config(), "group.id": "protosessions-unused",
                  "enable.auto.commit": False, "enable.partition.eof": True}
        count = len(self._parts or self.list_parts())
        return _RawPartition(self.settings, config, self.topic, int(for_part), count,
                             self.batch_size, self.tail, resume_state)


def unkeyed(batch: list) -> list:
    """Raw values -> `(None, value bytes)`, what the sink takes."""
    return [(None, raw) for raw in batch]


def build(brokers: str, src: str, dst: str, batch_size: int = 2000) -> Dataflow:
    flow = Dataflow("kafka_copy")
    msgs = op.input("input", flow, RawHitsSource(brokers, src, {}, Settings(), batch_size, tail=False))
    op.output("output", op.flat_map_batch("unkeyed", msgs, unkeyed),
              DeliveredKafkaSink(brokers, dst, {}))
    return flow


if __name__ == "__main__":
    if len(sys.argv) not in (4, 5):
        sys.exit(__doc__)
    batch = int(sys.argv[4]) if len(sys.argv) > 4 else 2000  # `protosessions run --batch-size` default
    # Same epoch as `protosessions run` (--snapshot-interval 10s); no recovery in either.
    cli_main(build(sys.argv[1], sys.argv[2], sys.argv[3], batch), workers_per_process=1,
             epoch_interval=timedelta(seconds=10))
