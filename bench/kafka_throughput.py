"""Kafka throughput: (a) `protosessions run --until-end` against (b) a bare
Bytewax flow that only copies the hits topic to another topic
(bench/kafka_copy_flow.py: the job's HitsSource and DeliveredKafkaSink). Both read
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

import re
import statistics
import sys
import uuid
from pathlib import Path

from common import (HERE, OUT, ROOT, kafka_bench_parser, create_topics, end_offsets, hits_file, kafka_broker,
                    measure, produce_file, require_broker)

BROKER_PORT = 19600


def run_child(cmd: list[str], log: Path, cwd: Path = ROOT) -> tuple[float, int, str]:
    """Wall seconds, peak RSS (bytes) and stderr of one child process."""
    child = measure(cmd, log, cwd=cwd)
    if child.exit_code != 0:
        raise SystemExit(f"failed (exit {child.exit_code}): {' '.join(cmd)}\n"
                         f"{child.stderr[-4000:]}")
    return child.seconds, child.peak_rss, child.stderr


def main() -> None:
    ap = kafka_bench_parser(__doc__, BROKER_PORT)
    ap.add_argument("--partitions", type=int, default=1, help="of the hits topic (and outputs)")
    ap.add_argument("--workers", type=int, default=1, help="of (a); (b) always has 1")
    ap.add_argument("--rounds", type=int, default=1,
                    help="measure a, b, a, b, ... (fresh output topics each time)")
    ap.add_argument("--dir", default=str(OUT), help="hits file cache")
    ap.add_argument("--base", help="also run (c): (a) from this other checkout (before a change)")
    ap.add_argument("run_args", nargs="*", help="extra `protosessions run` flags, after --")
    args = ap.parse_args()
    require_broker(ap, args)

    work = Path(args.dir)
    hits = hits_file(args.hits, args.clients, args.seed, work)
    py = sys.executable
    size = hits.stat().st_size

    with kafka_broker(args.brokers, args.start_broker, BROKER_PORT) as brokers:
        tag = f"kbench-{uuid.uuid4().hex[:8]}"
        hits_topic = f"{tag}.hits"
        parts = args.partitions
        create_topics(brokers, [hits_topic], parts)
        n, produce_secs = produce_file(brokers, hits_topic, hits, "hits")
        assert end_offsets(brokers, hits_topic) == n
        print(f"input: {n} hits, {args.clients} clients, {size / 1e6:.0f} MB, topic {hits_topic} "
              f"({parts} partition{'s' * (parts > 1)}), broker {brokers}; produced in "
              f"{produce_secs:.1f}s (not counted)")
        print(f"(a) workers {args.workers}; (b) workers 1", flush=True)
        print(f"{'run':28} {'hits':>9} {'seconds':>8} {'hits/s':>9} {'peak RSS MB':>12}  output",
              flush=True)

        results: dict[str, list[float]] = {"a": [], "b": [], "c": []}
        for r in range(args.rounds):
            sessions, dead, copy = (f"{tag}.r{r}.sessions", f"{tag}.r{r}.dead", f"{tag}.r{r}.copy")
            # Broker defaults: the largest session here, ~7 MB of JSON, fits the 1 MB
            # default `max.message.bytes` thanks to the sink's lz4 compression.
            create_topics(brokers, [sessions, dead, copy], parts)
            cmd_a = [py, "-m", "flows.cli", "run", "--kafka-brokers", brokers,
                     "--hits-topic", hits_topic, "--sessions-topic", sessions,
                     "--dead-letter-topic", dead, "--until-end", "--workers", str(args.workers),
                     *args.run_args]
            cmd_b = [py, str(HERE / "kafka_copy_flow.py"), brokers, hits_topic, copy]

            secs, rss, err = run_child(cmd_a, work / "kafka_a.stderr")
            n_sessions, n_dead = end_offsets(brokers, sessions), end_offsets(brokers, dead)
            summary = [ln for ln in err.splitlines() if re.search(r"hits read.*hits/s", ln)]
            results["a"].append(n / secs)
            print(f"{'(a) protosessions run':28} {n:9d} {secs:8.2f} {n / secs:9.0f} "
                  f"{rss / 1e6:12.0f}  {n_sessions} sessions, {n_dead} dead letters", flush=True)
            if summary:
                print(f"{'':28} {summary[-1].strip()}", flush=True)

            secs, rss, _ = run_child(cmd_b, work / "kafka_b.stderr")
            copied = end_offsets(brokers, copy)
            results["b"].append(n / secs)
            print(f"{'(b) copy flow':28} {n:9d} {secs:8.2f} {n / secs:9.0f} "
                  f"{rss / 1e6:12.0f}  {copied} records copied"
                  f"{'' if copied == n else f' (expected {n}!)'}", flush=True)
            print(f"round {r + 1}: (a)/(b) hits/s ratio {results['a'][-1] / results['b'][-1]:.2f}",
                  flush=True)
            if args.base:
                base_sessions = f"{tag}.r{r}.base.sessions"
                create_topics(brokers, [base_sessions], parts)
                cmd_c = [a if a != sessions else base_sessions for a in cmd_a]
                secs, rss, _ = run_child(cmd_c, work / "kafka_c.stderr", Path(args.base))
                results["c"].append(n / secs)
                print(f"{'(c) base: protosessions run':28} {n:9d} {secs:8.2f} {n / secs:9.0f} "
                      f"{rss / 1e6:12.0f}  {end_offsets(brokers, base_sessions)} sessions; "
                      f"(c)/(b) {results['c'][-1] / results['b'][-1]:.2f}, "
                      f"(a)/(c) {results['a'][-1] / results['c'][-1]:.2f}", flush=True)
        if args.rounds > 1:
            best_a, best_b = max(results["a"]), max(results["b"])
            print(f"best of {args.rounds}: (a) {best_a:.0f} hits/s, (b) {best_b:.0f} hits/s, "
                  f"ratio {best_a / best_b:.2f}")
        if results["c"]:
            med = {k: statistics.median(v) for k, v in results.items()}
            print(f"medians: (a)/(b) {med['a'] / med['b']:.2f}, (c)/(b) {med['c'] / med['b']:.2f}, "
                  f"(a)/(c) {med['a'] / med['c']:.2f}")


if __name__ == "__main__":
    main()
