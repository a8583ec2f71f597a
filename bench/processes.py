"""One process vs several (`python -m bytewax.run flows.sessions:flow -i I -a ADDRS`,
as the Kubernetes StatefulSet runs it) on the same hits backlog in Kafka.

Produces the benchmark file, keyed by client_id, to a fresh topic with one
partition per process (and its progress topic), then reads it to its end
(`PROTOSESSIONS_UNTIL_END`) with 1 process, with N and partitions read by
counts (`PROTOSESSIONS_MAX_PARTITION_SKEW=0s`), and with N kept level across
processes (the default). Prints wall time, hits/s and sessions written:
the sessions show what cross-process skew does to a backlog (README,
"Running on Kafka"). A benchmark: it asserts nothing.

    python bench/processes.py --start-broker --processes 2 --rounds 2
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import orjson

from common import (OUT, ROOT, add_broker_args, create_topics, end_offsets, hits_file, kafka_broker,
                    produce_file, require_broker)

from protosessions.topics import PROGRESS_TOPIC_CONFIG, progress_topic

BROKER_PORT = 19620


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    add_broker_args(ap, BROKER_PORT)
    ap.add_argument("--input", help="hits file (default: the generated 1M-hit benchmark file)")
    ap.add_argument("--processes", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=1)
    args = ap.parse_args()
    require_broker(ap, args)
    hits = Path(args.input) if args.input else hits_file()
    base_port = 21000 + os.getpid() % 2000

    with kafka_broker(args.brokers, args.start_broker, BROKER_PORT) as brokers:
        tag = f"procs-{uuid.uuid4().hex[:8]}"
        hits_topic = f"{tag}.hits"
        create_topics(brokers, [hits_topic], args.processes)
        create_topics(brokers, [progress_topic(hits_topic)], 1, {progress_topic(hits_topic): PROGRESS_TOPIC_CONFIG})
        n, _ = produce_file(brokers, hits_topic, hits, "hits",
                            lambda line: orjson.loads(line)["client_id"].encode())
        print(f"input: {n} hits keyed by client_id in {args.processes} partitions", flush=True)
        runs = 0
        for _ in range(args.rounds):
            for nproc, skew in ((1, "1s"), (args.processes, "0s"), (args.processes, "1s")):
                out = f"{tag}.r{runs}"
                create_topics(brokers, [out + ".sessions", out + ".dead"], args.processes)
                env = {**os.environ, "PROTOSESSIONS_KAFKA_BROKERS": brokers,
                       "PROTOSESSIONS_HITS_TOPIC": hits_topic,
                       "PROTOSESSIONS_SESSIONS_TOPIC": out + ".sessions",
                       "PROTOSESSIONS_DEAD_LETTER_TOPIC": out + ".dead",
                       "PROTOSESSIONS_UNTIL_END": "true", "PROTOSESSIONS_MAX_PARTITION_SKEW": skew,
                       "BYTEWAX_DATAFLOW_API_CACHE_PATH": str(OUT)}  # not the checkout
                addrs = ";".join(f"127.0.0.1:{base_port + 10 * runs + i}" for i in range(nproc))
                start = time.perf_counter()
                procs = []
                for i in range(nproc):
                    cmd = [sys.executable, "-m", "bytewax.run", "flows.sessions:flow", "-w", "1"]
                    if nproc > 1:
                        cmd += ["-i", str(i), "-a", addrs]
                    procs.append(subprocess.Popen(cmd, cwd=ROOT, env=env,
                                                  stdout=subprocess.DEVNULL,
                                                  stderr=subprocess.DEVNULL))
                codes = [p.wait() for p in procs]
                secs = time.perf_counter() - start
                if any(codes):
                    raise SystemExit(f"{nproc} processes failed: exit codes {codes}")
                how = "" if nproc == 1 else (", by counts" if skew == "0s" else ", kept level")
                print(f"{nproc} process{'es' if nproc > 1 else ''}{how:13}: {secs:6.1f} s "
                      f"{n / secs:8.0f} hits/s  {end_offsets(brokers, out + '.sessions')} sessions",
                      flush=True)
                runs += 1


if __name__ == "__main__":
    main()
