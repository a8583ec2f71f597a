"""The time merge on the real broker (SPEC rule 2): generated streams on topics
of 3 and 8 partitions keyed by client_id, read with several batch sizes by one
or two processes, give the sessions of one file holding the partitions' time
merge (built here from what the partitions hold); and a live stream produced in
time order while the job runs gives them too."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import tempfile
import time
import uuid
import zlib
from datetime import datetime, timezone

import orjson
import pytest

from kafka_support import bootstrap, consume_all, produce, run_cluster_to_end
from protosessions.config import Settings
from protosessions.engine import Engine
from protosessions.generate import generate_hits
from protosessions.merge import merged
from protosessions.timefmt import format_time_us, wall_now_us
from flows.topics import create_topics

pytestmark = pytest.mark.kafka
START = datetime(2025, 6, 1, tzinfo=timezone.utc)


class Topic:
    """A hits topic keyed by client_id, what each partition holds, and the
    sessions of the partitions' time merge."""

    def __init__(self, lines: list[bytes], partitions: int) -> None:
        self.brokers = bootstrap()
        self.hits = f"merge-{uuid.uuid4().hex[:8]}.hits"
        create_topics(self.brokers, [self.hits], partitions, 1, {})
        produce(self.brokers, self.hits, lines,
                keys=[orjson.loads(raw)["client_id"].encode() for raw in lines])
        parts: list[list[bytes]] = [[] for _ in range(partitions)]
        for m in consume_all(self.brokers, self.hits, expect=len(lines), timeout=120):
            parts[m.partition()].append(m.value())
        assert sum(map(len, parts)) == len(lines)
        assert sum(1 for p in parts if p) >= 2, "the hits must be spread over partitions"
        self.want = _sessions_of(Engine(Settings()).run(merged(parts, Settings())))

    def outputs(self) -> tuple[str, str]:
        tag = uuid.uuid4().hex[:8]
        names = (f"{self.hits}.{tag}.sessions", f"{self.hits}.{tag}.dead")
        create_topics(self.brokers, list(names), 1, 1, {})
        return names


def _sessions_of(closed: list) -> list[dict]:
    return sorted((orjson.loads(b) for _, b in closed), key=lambda s: s["session_id"])


def _read_sessions(brokers: str, topic: str, expect: int) -> list[dict]:
    msgs = consume_all(brokers, topic, expect=expect, timeout=120)
    msgs += consume_all(brokers, topic, idle=1.0)[len(msgs):]  # and nothing more
    return sorted((orjson.loads(m.value()) for m in msgs), key=lambda s: s["session_id"])


def run_one_process(t: Topic, batch: int) -> list[dict]:
    sessions, dead = t.outputs()
    proc = subprocess.run(
        [sys.executable, "-m", "flows.cli", "run", "--kafka-brokers", t.brokers,
         "--hits-topic", t.hits, "--sessions-topic", sessions, "--dead-letter-topic", dead,
         "--until-end", "--batch-size", str(batch)],
        capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    return _read_sessions(t.brokers, sessions, len(t.want))


def run_two_processes(t: Topic, batch: int) -> list[dict]:
    sessions, dead = t.outputs()
    run_cluster_to_end(t.brokers, t.hits, sessions, dead, batch,
                       24000 + (os.getpid() * 7 + batch) % 2000, tempfile.gettempdir())
    return _read_sessions(t.brokers, sessions, len(t.want))


@pytest.fixture(scope="module")
def low_volume() -> list[bytes]:
    """5,000 hits over about 20 hours (a quiet site: batches span hours)."""
    return list(generate_hits(5000, 42, seed=5, start=START))


@pytest.fixture(scope="module")
def high_volume() -> list[bytes]:
    return list(generate_hits(200_000, 10_000, seed=6, start=START))


@pytest.fixture(scope="module")
def low_topics(low_volume) -> dict[int, Topic]:
    return {n: Topic(low_volume, n) for n in (3, 8)}


@pytest.fixture(scope="module")
def high_topics(high_volume) -> dict[int, Topic]:
    return {n: Topic(high_volume, n) for n in (3, 8)}


@pytest.mark.parametrize("partitions,batch,processes",
                         [(p, b, 1) for p in (3, 8) for b in (1, 50, 2000)]
                         + [(3, 1, 2), (8, 50, 2), (8, 2000, 2)])
def test_low_volume_stream(low_topics, partitions: int, batch: int, processes: int) -> None:
    t = low_topics[partitions]
    run = run_one_process if processes == 1 else run_two_processes
    assert run(t, batch) == t.want


@pytest.mark.parametrize("partitions,batch,processes",
                         [(3, 2000, 1), (8, 50, 1), (3, 50, 2), (8, 2000, 2)])
def test_high_volume_stream(high_topics, partitions: int, batch: int, processes: int) -> None:
    t = high_topics[partitions]
    run = run_one_process if processes == 1 else run_two_processes
    assert run(t, batch) == t.want


def test_live_stream_in_time_order() -> None:
    """Hits produced in time order (t = now) to 3 partitions for a minute
    while the job runs: the sessions of the partitions' time merge. Visits
    last 3 s with 8 s pauses and sessions end after 4 s of inactivity, so a
    hit that arrives a moment late in a caught-up partition still joins its
    visit. Sessions still open when the stream ends close by inactivity when
    the clock follows wall time; the reference, a finite input, closes them
    as end_of_input."""
    brokers = bootstrap()
    hits_topic = f"live-{uuid.uuid4().hex[:8]}"
    names = [hits_topic + ".hits", hits_topic + ".sessions", hits_topic + ".dead"]
    create_topics(brokers, names, 3, 1, {})
    create_topics(brokers, names[1:], 1, 1, {})
    proc = subprocess.Popen(
        [sys.executable, "-m", "flows.cli", "run", "--kafka-brokers", brokers,
         "--hits-topic", names[0], "--sessions-topic", names[1], "--dead-letter-topic", names[2],
         "--session-duration", "4s", "--tick-interval", "1s"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True,
        env={**os.environ, "BYTEWAX_DATAFLOW_API_CACHE_PATH": tempfile.gettempdir()})
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": brokers, "enable.idempotence": True,
                         "linger.ms": 5})
    rng = random.Random(7)
    clients = [f"c{i}" for i in range(20)]
    phase = {c: rng.uniform(0, 11) for c in clients}  # a visit: 3 s on, 8 s off
    sent: dict[int, list[bytes]] = {0: [], 1: [], 2: []}
    try:
        time.sleep(3)
        start = time.monotonic()
        n = 0
        while time.monotonic() - start < 60:
            elapsed = time.monotonic() - start
            for c in clients:
                if (elapsed + phase[c]) % 11 < 3 and rng.random() < 0.3:
                    n += 1
                    raw = orjson.dumps({"id": f"h{n}", "client_id": c, "property_id": "G-1",
                                        "server_received_time": format_time_us(wall_now_us())})
                    part = zlib.crc32(c.encode()) % 3
                    producer.produce(names[0], value=raw, key=c, partition=part)
                    sent[part].append(raw)
            producer.poll(0)
            time.sleep(0.1)
        assert producer.flush(30) == 0
        want = _sessions_of(Engine(Settings(session_duration_us=4_000_000)).run(
            merged([sent[p] for p in range(3)], Settings(session_duration_us=4_000_000))))
        got = _read_sessions(brokers, names[1], len(want))
    finally:
        proc.kill()
        proc.wait(30)
    for s in want:
        if s["close_reason"] == "end_of_input":
            s["close_reason"] = "inactivity"
    assert got == want
