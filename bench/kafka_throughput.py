"""Kafka throughput: (a) `protosessions run --until-end` against (b) a bare
Bytewax flow that only copies the hits topic to another topic
(bench/kafka_copy_flow.py: same KafkaSource and DeliveredKafkaSink). Both read
the same, freshly produced hits topic to its end as child processes, in one run
of this script; prints wall time, hits/s, the (a)/(b) ratio, peak RSS (os.wait4
ru_maxrss) and the sessions written. Producing the hits is not timed into
either. A benchmark: it asserts nothing about time.

    python bench/kafka_throughput.py --brokers 127.0.0.1:9092
    python bench/kafka_throughput.py --start-broker          # scripts/kafka.sh on port 19600
    python bench/kafka_throughput.py --start-broker --hits 200000 --clients 10000 --rounds 2

Wall time of each child includes its start-up (Python, Bytewax, connecting to
Kafka) and, for (a), closing every open session at the end of input.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
BROKER_PORT = 19600


# -- broker -------------------------------------------------------------------------------

def broker_cmd(cmd: str, port: int = BROKER_PORT) -> str:
    """`scripts/kafka.sh start|stop` on our own port; returns the last stdout line."""
    env = {**os.environ, "KAFKA_PORT": str(port), "PYTHON": sys.executable}
    out = subprocess.run(["bash", str(ROOT / "scripts" / "kafka.sh"), cmd], env=env, check=True,
                         capture_output=True, text=True, timeout=180).stdout.strip()
    return out.splitlines()[-1] if out else ""


def create_topics(brokers: str, names: list[str], partitions: int) -> None:
    """Fresh topics with the broker's default configs, as `protosessions topics
    create` makes them (the largest session here, ~7 MB of JSON, fits the 1 MB
    default `max.message.bytes` thanks to the sink's lz4 compression)."""
    sys.path.insert(0, str(ROOT))
    from protosessions.topics import create_topics as create

    create(brokers, names, partitions, 1, {})


def end_offsets(brokers: str, topic: str) -> int:
    """Messages in `topic`: sum of high watermarks (fresh topics, no transactions)."""
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": brokers, "group.id": "bench-" + uuid.uuid4().hex})
    try:
        md = c.list_topics(topic, timeout=10).topics[topic]
        return sum(c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
                   for p in md.partitions)
    finally:
        c.close()


def produce_file(brokers: str, topic: str, path: Path) -> tuple[int, float]:
    """Every line of `path` as one record (no key: partitions by librdkafka's
    sticky partitioner); returns (count, seconds)."""
    from confluent_kafka import Producer

    p = Producer({"bootstrap.servers": brokers, "enable.idempotence": True, "acks": "all",
                  "linger.ms": 20, "batch.size": 1_000_000, "compression.type": "lz4",
                  "queue.buffering.max.messages": 500_000})
    errors: list = []

    def on_delivery(err, _msg) -> None:
        if err is not None:
            errors.append(err)

    start = time.perf_counter()
    n = 0
    with path.open("rb") as f:
        for line in f:
            line = line.rstrip(b"\n")
            if not line:
                continue
            while True:
                try:
                    p.produce(topic, value=line, on_delivery=on_delivery)
                    break
                except BufferError:
                    p.poll(0.05)
            n += 1
            if n % 10_000 == 0:
                p.poll(0)
    left = p.flush(300)
    if left or errors:
        raise SystemExit(f"producing hits failed: {left} undelivered, errors {errors[:3]}")
    return n, time.perf_counter() - start


# -- children -----------------------------------------------------------------------------

def measure(cmd: list[str], log: Path) -> tuple[float, int, str]:
    """Wall seconds, peak RSS (bytes) and stderr of one child process."""
    with log.open("wb") as err:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        secs = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
    text = log.read_text(errors="replace")
    if proc.returncode != 0:
        raise SystemExit(f"failed (exit {proc.returncode}): {' '.join(cmd)}\n{text[-4000:]}")
    return secs, usage.ru_maxrss * 1024, text


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--brokers", default=os.environ.get("PROTOSESSIONS_KAFKA_BROKERS"),
                    help="HOST:PORT of a running broker (or --start-broker)")
    ap.add_argument("--start-broker", action="store_true",
                    help=f"start scripts/kafka.sh on port {BROKER_PORT}, stop it at the end")
    ap.add_argument("--hits", type=int, default=1_000_000)
    ap.add_argument("--clients", type=int, default=50_000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--partitions", type=int, default=1, help="of the hits topic (and outputs)")
    ap.add_argument("--workers", type=int, default=1, help="of (a); (b) always has 1")
    ap.add_argument("--rounds", type=int, default=1,
                    help="measure a, b, a, b, ... (fresh output topics each time)")
    ap.add_argument("--dir", default=str(ROOT / "bench" / "out"), help="hits file cache")
    ap.add_argument("run_args", nargs="*", help="extra `protosessions run` flags, after --")
    args = ap.parse_args()
    if not args.brokers and not args.start_broker:
        ap.error("give --brokers HOST:PORT or --start-broker")

    work = Path(args.dir)
    work.mkdir(parents=True, exist_ok=True)
    hits = work / f"hits_{args.hits}_{args.clients}_{args.seed}.jsonl"
    py = sys.executable
    if not hits.exists():
        print(f"generating {hits} ...", flush=True)
        tmp = hits.with_suffix(".tmp")
        subprocess.run([py, "-m", "protosessions.cli", "generate", "--hits", str(args.hits),
                        "--clients", str(args.clients), "--seed", str(args.seed),
                        "--output", str(tmp)], check=True, cwd=ROOT)
        tmp.rename(hits)
    size = hits.stat().st_size

    started = False
    try:
        if args.start_broker:
            args.brokers = broker_cmd("start")
            started = True
        brokers = args.brokers
        tag = f"kbench-{uuid.uuid4().hex[:8]}"
        hits_topic = f"{tag}.hits"
        parts = args.partitions
        create_topics(brokers, [hits_topic], parts)
        n, produce_secs = produce_file(brokers, hits_topic, hits)
        assert end_offsets(brokers, hits_topic) == n
        print(f"input: {n} hits, {args.clients} clients, {size / 1e6:.0f} MB, topic {hits_topic} "
              f"({parts} partition{'s' * (parts > 1)}), broker {brokers}; produced in "
              f"{produce_secs:.1f}s (not counted)")
        print(f"(a) workers {args.workers}; (b) workers 1", flush=True)
        print(f"{'run':28} {'hits':>9} {'seconds':>8} {'hits/s':>9} {'peak RSS MB':>12}  output",
              flush=True)

        results: dict[str, list[float]] = {"a": [], "b": []}
        for r in range(args.rounds):
            sessions, dead, copy = (f"{tag}.r{r}.sessions", f"{tag}.r{r}.dead", f"{tag}.r{r}.copy")
            create_topics(brokers, [sessions, dead, copy], parts)
            cmd_a = [py, "-m", "protosessions.cli", "run", "--kafka-brokers", brokers,
                     "--hits-topic", hits_topic, "--sessions-topic", sessions,
                     "--dead-letter-topic", dead, "--until-end", "--workers", str(args.workers),
                     *args.run_args]
            cmd_b = [py, str(HERE / "kafka_copy_flow.py"), brokers, hits_topic, copy]

            secs, rss, err = measure(cmd_a, work / "kafka_a.stderr")
            n_sessions, n_dead = end_offsets(brokers, sessions), end_offsets(brokers, dead)
            summary = [ln for ln in err.splitlines() if re.search(r"hits read.*hits/s", ln)]
            results["a"].append(n / secs)
            print(f"{'(a) protosessions run':28} {n:9d} {secs:8.2f} {n / secs:9.0f} "
                  f"{rss / 1e6:12.0f}  {n_sessions} sessions, {n_dead} dead letters", flush=True)
            if summary:
                print(f"{'':28} {summary[-1].strip()}", flush=True)

            secs, rss, _ = measure(cmd_b, work / "kafka_b.stderr")
            copied = end_offsets(brokers, copy)
            results["b"].append(n / secs)
            print(f"{'(b) copy flow':28} {n:9d} {secs:8.2f} {n / secs:9.0f} "
                  f"{rss / 1e6:12.0f}  {copied} records copied"
                  f"{'' if copied == n else f' (expected {n}!)'}", flush=True)
            print(f"round {r + 1}: (a)/(b) hits/s ratio {results['a'][-1] / results['b'][-1]:.2f}",
                  flush=True)
        if args.rounds > 1:
            best_a, best_b = max(results["a"]), max(results["b"])
            print(f"best of {args.rounds}: (a) {best_a:.0f} hits/s, (b) {best_b:.0f} hits/s, "
                  f"ratio {best_a / best_b:.2f}")
    finally:
        if started:
            broker_cmd("stop")


if __name__ == "__main__":
    main()
