"""Sessions from a multi-partition hits topic, read by counts vs kept level in
hit time (`--max-partition-skew`), against the same hits in order from a file.

Produces the benchmark file to two fresh 2-partition topics, one keyed by
client_id (as a tracker would) and one unkeyed (librdkafka's sticky
partitioner, producing far faster than real time, leaves long runs of hit time
in one partition), then runs `protosessions run --until-end` on each with
`--max-partition-skew 0s` (off) and the default. Prints sessions and
duplicates caught per run; in-order input is the file run. A benchmark: it
asserts nothing.

    python bench/partition_skew.py --start-broker
"""

from __future__ import annotations

import argparse
import re
import sys
import uuid
from pathlib import Path

import orjson

from common import (add_broker_args, create_topics, hits_file, kafka_broker, measure, produce_file,
                    require_broker)

BROKER_PORT = 19610
SUMMARY = re.compile(r"hits read, (\d+) sessions.*?(\d+) duplicates")


def summary(cmd: list[str]) -> tuple[int, int, float]:
    """Sessions, duplicates and seconds of one `protosessions run`."""
    child = measure(cmd)
    found = SUMMARY.findall(child.stderr)
    if child.exit_code != 0 or not found:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{child.stderr[-3000:]}")
    sessions, dups = found[-1]
    return int(sessions), int(dups), child.seconds


def client_id(line: bytes) -> bytes:
    return orjson.loads(line)["client_id"].encode()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    add_broker_args(ap, BROKER_PORT)
    ap.add_argument("--input", help="hits file (default: the generated 1M-hit benchmark file)")
    ap.add_argument("--partitions", type=int, default=2)
    args = ap.parse_args()
    require_broker(ap, args)
    hits = Path(args.input) if args.input else hits_file()
    py = sys.executable
    run = [py, "-m", "protosessions.cli", "run"]

    sessions, dups, secs = summary(run + ["--input", str(hits), "--output", "/dev/null",
                                          "--dead-letter", "/dev/null"])
    print(f"{'in order (file)':38} {sessions:8d} sessions {dups:6d} duplicates caught  {secs:5.1f}s",
          flush=True)
    with kafka_broker(args.brokers, args.start_broker, BROKER_PORT) as brokers:
        tag = f"skew-{uuid.uuid4().hex[:8]}"
        for layout, key_of in (("keyed by client_id", client_id), ("unkeyed", None)):
            topic = f"{tag}.{layout.split()[0]}.hits"
            create_topics(brokers, [topic], args.partitions)
            produce_file(brokers, topic, hits, "hits", key_of)
            for skew in ("0s", "1s"):
                out = f"{topic}.{skew}"
                create_topics(brokers, [out + ".sessions", out + ".dead"], args.partitions)
                sessions, dups, secs = summary(run + [
                    "--kafka-brokers", brokers, "--hits-topic", topic, "--sessions-topic",
                    out + ".sessions", "--dead-letter-topic", out + ".dead", "--until-end",
                    "--max-partition-skew", skew])
                label = f"{layout}, {'read by counts' if skew == '0s' else 'kept level (1s)'}"
                print(f"{label:38} {sessions:8d} sessions {dups:6d} duplicates caught  {secs:5.1f}s",
                      flush=True)


if __name__ == "__main__":
    main()
