"""Kafka benchmark floor: a bare Bytewax flow that only copies hits from one
topic to another, with the same source (`KafkaSource`, here `tail=False`: read
to the end of the topic, then stop) and the same sink class
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

from flows.kafka import DeliveredKafkaSink, hits_source  # noqa: E402


def unkeyed(batch: list) -> list:
    """Kafka messages -> `(None, value bytes)`, what the sink takes."""
    return [(None, m.value or b"") for m in batch]


def build(brokers: str, src: str, dst: str, batch_size: int = 2000) -> Dataflow:
    flow = Dataflow("kafka_copy")
    msgs = op.input("input", flow, hits_source(brokers, src, {}, batch_size, tail=False))
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
