"""Close latency on an idle stream: how long after a session expires (last hit
+ session duration) its record lands in the sessions topic.

Starts `protosessions run` streaming (no --until-end) on fresh topics, waits
until a warm-up hit has come out as a session (the job is up end to end), then
produces one hit for each of K clients, spread at `--rate` hits/s, each with
`server_received_time` = the wall time it is produced. The sessions topic is
created with `message.timestamp.type=LogAppendTime`, so a record's timestamp is
the broker's append time; latency = that - (last hit time + session duration).
Prints count, p50, p90, p99 and max in ms. The job is killed at the end. A
benchmark: it asserts nothing about time.

    python bench/close_latency.py --brokers 127.0.0.1:9092
    python bench/close_latency.py --start-broker --clients 200 --rate 20 \\
        --session-duration 2s --tick-interval 1s [-- EXTRA RUN FLAGS]
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import orjson

from common import ROOT, add_broker_args, create_topics, kafka_broker, require_broker
from protosessions.timefmt import format_time_us, wall_now_us
from protosessions.units import parse_duration_us

BROKER_PORT = 19600


def hit(hit_id: str, client: str, t_us: int, ip: str) -> bytes:
    return orjson.dumps({"id": hit_id, "client_id": client, "property_id": "G-LATENCY",
                         "server_received_time": format_time_us(t_us), "ip": ip,
                         "host": "metrics.example.com", "method": "POST", "path": "/g/collect",
                         "query_params": {"v": ["2"], "tid": ["G-LATENCY"], "cid": [client],
                                          "en": ["page_view"]}})


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile."""
    k = max(0, min(len(sorted_values) - 1, int(-(-q * len(sorted_values) // 100)) - 1))
    return sorted_values[k]


def measure_latency(args: argparse.Namespace, brokers: str, duration_s: float) -> None:
    """Fresh topics on `brokers`, the job, the hits, the figures; the job is
    killed and the Kafka clients closed at the end (before a broker that
    `main` started is stopped)."""
    from confluent_kafka import TIMESTAMP_LOG_APPEND_TIME, Consumer, Producer, TopicPartition

    proc = None
    consumer = None
    producer = None
    try:
        tag = f"latency-{uuid.uuid4().hex[:8]}"
        t = {"hits": f"{tag}.hits", "sessions": f"{tag}.sessions", "dead": f"{tag}.dead"}
        create_topics(brokers, list(t.values()),
                      configs={t["sessions"]: {"message.timestamp.type": "LogAppendTime"}})

        consumer = Consumer({"bootstrap.servers": brokers, "group.id": uuid.uuid4().hex,
                             "enable.auto.commit": False, "fetch.wait.max.ms": 10})
        consumer.assign([TopicPartition(t["sessions"], 0, 0)])
        producer = Producer({"bootstrap.servers": brokers, "enable.idempotence": True,
                             "acks": "all", "linger.ms": 0})

        Path(args.log).parent.mkdir(parents=True, exist_ok=True)
        log = open(args.log, "wb")
        cmd = [sys.executable, "-m", "flows.cli", "run", "--kafka-brokers", brokers,
               "--hits-topic", t["hits"], "--sessions-topic", t["sessions"],
               "--dead-letter-topic", t["dead"], "--session-duration", args.session_duration,
               "--tick-interval", args.tick_interval, "--workers", str(args.workers),
               *args.run_args]
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=log,
                                start_new_session=True)
        launched = time.monotonic()

        # Up = a warm-up hit went all the way through (source assigned, clock
        # ticking, sink connected). Its session is left out of the figures.
        producer.produce(t["hits"], hit("warmup", "warmup", wall_now_us(), "198.51.100.1"))
        producer.flush(30)
        deadline = launched + args.startup_timeout
        while True:
            if proc.poll() is not None:
                raise SystemExit(f"the job exited ({proc.returncode}) during start-up; "
                                 f"see {args.log}")
            if time.monotonic() > deadline:
                raise SystemExit(f"no warm-up session within {args.startup_timeout}s; see {args.log}")
            msg = consumer.poll(0.2)
            if msg is not None and not msg.error():
                break
        print(f"job up end to end {time.monotonic() - launched:.1f}s after launch "
              f"(warm-up session received)", flush=True)
        time.sleep(1.0)  # idle again

        # K clients, one hit each, at wall time now.
        produced_at: dict[str, float] = {}  # hit id -> server_received_time (s)
        t0 = time.monotonic()
        for i in range(args.clients):
            wait = t0 + i / args.rate - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            now = wall_now_us()
            hid = f"lat-{i}"
            producer.produce(t["hits"], hit(hid, f"{1_000_000 + i}.1700000000", now,
                                            f"203.0.{i // 250}.{i % 250 + 1}"))
            producer.poll(0)
            produced_at[hid] = now / 1e6
        producer.flush(30)
        last_produced = time.monotonic()
        print(f"produced {args.clients} hits over {last_produced - t0:.1f}s "
              f"(session duration {args.session_duration}, tick {args.tick_interval})", flush=True)

        latencies: list[float] = []
        reasons: dict[str, int] = {}
        ts_types: set[int] = set()
        seen_hits = 0
        deadline = last_produced + duration_s + 60
        while seen_hits < args.clients and time.monotonic() < deadline:
            msg = consumer.poll(0.2)
            if msg is None or msg.error():
                continue
            s = orjson.loads(msg.value())
            times = [produced_at[h["id"]] for h in s["hits"] if h["id"] in produced_at]
            if not times:
                continue  # the warm-up session
            ts_type, ts_ms = msg.timestamp()
            ts_types.add(ts_type)
            latencies.append(ts_ms / 1000 - (max(times) + duration_s))
            reasons[s["close_reason"]] = reasons.get(s["close_reason"], 0) + 1
            seen_hits += len(times)

        if not latencies:
            raise SystemExit(f"no session came out; see {args.log}")
        ms = sorted(x * 1000 for x in latencies)
        print(f"sessions {len(ms)} (hits in them {seen_hits} of {args.clients}); "
              f"close reasons {reasons}; record timestamps "
              f"{'LogAppendTime' if ts_types == {TIMESTAMP_LOG_APPEND_TIME} else ts_types}")
        print(f"close latency after expiry, ms: count {len(ms)}  p50 {percentile(ms, 50):.0f}  "
              f"p90 {percentile(ms, 90):.0f}  p99 {percentile(ms, 99):.0f}  max {ms[-1]:.0f}  "
              f"(min {ms[0]:.0f})")
    finally:
        if consumer is not None:
            consumer.close()
        if proc is not None and proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(30)
        producer = None  # close the client before the broker goes away


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    add_broker_args(ap, BROKER_PORT)
    ap.add_argument("--clients", type=int, default=200, help="K: one hit (one session) each")
    ap.add_argument("--rate", type=float, default=20.0, help="hits produced per second")
    ap.add_argument("--session-duration", default="2s")
    ap.add_argument("--tick-interval", default="1s")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--startup-timeout", type=float, default=90.0)
    ap.add_argument("--log", default=str(ROOT / "bench" / "out" / "close_latency.stderr"),
                    help="stderr of the job")
    ap.add_argument("run_args", nargs="*", help="extra `protosessions run` flags, after --")
    args = ap.parse_args()
    require_broker(ap, args)
    duration_s = parse_duration_us(args.session_duration) / 1e6

    with kafka_broker(args.brokers, args.start_broker, BROKER_PORT) as brokers:
        measure_latency(args, brokers, duration_s)


if __name__ == "__main__":
    main()
