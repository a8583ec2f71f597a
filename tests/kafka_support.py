"""Helpers for integration tests against the real broker started by scripts/kafka.sh.

`PROTOSESSIONS_TEST_KAFKA` names the broker (scripts/test.sh starts one and
sets it). Without it the Kafka tests fail under CI and are skipped elsewhere.
"""

from __future__ import annotations

import os
import time
import uuid

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from flows.topics import create_topics


def bootstrap() -> str:
    addr = os.environ.get("PROTOSESSIONS_TEST_KAFKA")
    if not addr:
        if os.environ.get("CI"):
            pytest.fail("PROTOSESSIONS_TEST_KAFKA is not set: CI must run the Kafka tests "
                        "(bash scripts/test.sh starts the broker)")
        pytest.skip("no Kafka broker: run through `bash scripts/test.sh`")
    return addr


def topics(brokers: str, partitions: int = 1, prefix: str = "t") -> dict[str, str]:
    """Fresh hits/sessions/dead-letter topics for one test."""
    tag = f"{prefix}-{uuid.uuid4().hex[:8]}"
    names = {"hits": f"{tag}.hits", "sessions": f"{tag}.sessions", "dead": f"{tag}.dead"}
    create_topics(brokers, list(names.values()), partitions, 1, {})
    return names


def produce(brokers: str, topic: str, values: list[bytes], keys: list | None = None,
            partition: int | None = None) -> None:
    p = Producer({"bootstrap.servers": brokers, "enable.idempotence": True, "acks": "all",
                  "linger.ms": 5})
    errors: list = []
    for i, v in enumerate(values):
        kw = {} if partition is None else {"partition": partition}
        while True:
            try:
                p.produce(topic, value=v, key=keys[i] if keys else None,
                          on_delivery=lambda err, _m: err and errors.append(err), **kw)
                break
            except BufferError:
                p.poll(0.1)
    assert p.flush(60) == 0
    assert not errors, errors


def consume_all(brokers: str, topic: str, expect: int | None = None, timeout: float = 60.0,
                idle: float = 2.0) -> list:
    """Every message of `topic` from the beginning: until `expect` messages
    arrived (or `timeout`), or, with `expect` None, until `idle` s pass without one."""
    c = Consumer({"bootstrap.servers": brokers, "group.id": uuid.uuid4().hex,
                  "auto.offset.reset": "earliest", "enable.auto.commit": False})
    md = c.list_topics(topic, timeout=10).topics[topic]
    c.assign([TopicPartition(topic, p, 0) for p in md.partitions])
    out: list = []
    deadline = time.monotonic() + timeout
    last = time.monotonic()
    try:
        while time.monotonic() < deadline:
            if expect is not None and len(out) >= expect:
                break
            msg = c.poll(0.2)
            if msg is None:
                if expect is None and time.monotonic() - last > idle:
                    break
                continue
            if msg.error():
                continue
            out.append(msg)
            last = time.monotonic()
    finally:
        c.close()
    return out


def run_cluster_to_end(brokers: str, hits: str, sessions: str, dead: str, batch: int,
                       base_port: int, cache_dir: str, processes: int = 2) -> None:
    """The flow as the StatefulSet runs it (`python -m bytewax.run`, one
    worker per process) over loopback, reading the hits topic to its end."""
    import subprocess
    import sys
    from pathlib import Path

    env = {**os.environ, "PROTOSESSIONS_KAFKA_BROKERS": brokers,
           "PROTOSESSIONS_HITS_TOPIC": hits, "PROTOSESSIONS_SESSIONS_TOPIC": sessions,
           "PROTOSESSIONS_DEAD_LETTER_TOPIC": dead, "PROTOSESSIONS_UNTIL_END": "true",
           "PROTOSESSIONS_BATCH_SIZE": str(batch),
           "BYTEWAX_DATAFLOW_API_CACHE_PATH": cache_dir}  # not the checkout
    addrs = ";".join(f"127.0.0.1:{base_port + i}" for i in range(processes))
    procs = [subprocess.Popen([sys.executable, "-m", "bytewax.run", "flows.sessions:flow",
                               "-w", "1", "-i", str(i), "-a", addrs],
                              cwd=Path(__file__).resolve().parent.parent, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
             for i in range(processes)]
    for p in procs:
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, err.decode()[-3000:]
