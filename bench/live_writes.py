"""Recovery writes on a live stream (issue 17's first row): a 3-partition hits
topic on a real broker, `protosessions generate --rate R` producing live,
one `protosessions run` with `--recovery-dir` and the default snapshot
interval, and every `--every` seconds the bytes the job wrote in that span
(`wchar` of /proc/PID/io: the recovery partitions and state stores, and the
sessions it produced), its CPU and RSS, and the open proto-sessions it
reports. Snapshots that cost the new work keep the write rate flat while
the open state grows. A benchmark: it prints figures and asserts nothing.

    python bench/live_writes.py --start-broker --rate 1000 --duration 200
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import OUT, ROOT, add_broker_args, kafka_broker, require_broker
from live_cpu import live_topics, start_generator
from merge import child_env

BROKER_PORT = 19700
OPEN = re.compile(r"(\d+) open proto-sessions")


def wchar(pid: int) -> int:
    with open(f"/proc/{pid}/io") as f:
        return int(dict(line.split(": ") for line in f.read().splitlines())["wchar"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    add_broker_args(ap, BROKER_PORT)
    ap.add_argument("--rate", type=float, default=1000.0, help="hits/s produced")
    ap.add_argument("--duration", type=float, default=200.0, help="seconds measured")
    ap.add_argument("--every", type=float, default=10.0, help="seconds a row covers")
    ap.add_argument("--clients", type=int, default=50_000, help="the generator's clients")
    ap.add_argument("run_args", nargs="*", help="extra `protosessions run` flags, after --")
    args = ap.parse_args()
    require_broker(ap, args)
    import psutil

    OUT.mkdir(parents=True, exist_ok=True)
    with kafka_broker(args.brokers, args.start_broker, BROKER_PORT) as brokers:
        tag, topics = live_topics(brokers, "livewrites")
        cache = OUT / "live_writes_cache"
        rec = Path(tempfile.mkdtemp(dir=OUT)) / "recovery"
        py = sys.executable
        subprocess.run([py, "-m", "flows.cli", "recovery", "init", str(rec), "--partitions", "1"], cwd=ROOT,
                       env=child_env(cache), check=True, capture_output=True)
        log = OUT / f"{tag}.stderr"
        gen = start_generator(brokers, topics["hits"], args.rate, args.clients,
                              args.duration + 60, cache)
        job = subprocess.Popen(
            [py, "-m", "flows.cli", "run", "--kafka-brokers", brokers, "--hits-topic",
             topics["hits"], "--sessions-topic", topics["sessions"], "--dead-letter-topic",
             topics["dead"], "--recovery-dir", str(rec), *args.run_args],
            cwd=ROOT, env=child_env(cache), stdout=subprocess.DEVNULL, stderr=log.open("wb"),
            start_new_session=True)
        try:
            print(f"live {args.rate:.0f} hits/s, {args.clients} clients, 3 partitions, "
                  f"--recovery-dir {rec} {' '.join(args.run_args)}", flush=True)
            print(f"{'t s':>5} {'MB written':>11} {'MB/s':>6} {'CPU %':>6} {'RSS MB':>7} "
                  f"{'open':>8}", flush=True)
            ps = psutil.Process(job.pid)
            t0 = time.monotonic()
            w0, c0, last = wchar(job.pid), sum(ps.cpu_times()[:2]), t0
            while time.monotonic() - t0 < args.duration:
                time.sleep(args.every)
                if job.poll() is not None:
                    raise SystemExit(f"the job exited ({job.returncode}); see {log}")
                now = time.monotonic()
                w1, c1 = wchar(job.pid), sum(ps.cpu_times()[:2])
                found = OPEN.findall(log.read_text(errors="replace"))
                print(f"{now - t0:5.0f} {(w1 - w0) / 1e6:11.1f} {(w1 - w0) / 1e6 / (now - last):6.2f} "
                      f"{100 * (c1 - c0) / (now - last):6.1f} {ps.memory_info().rss / 2**20:7.0f} "
                      f"{found[-1] if found else '-':>8}", flush=True)
                w0, c0, last = w1, c1, now
        finally:
            for p in (job, gen):
                if p.poll() is None:
                    os.killpg(p.pid, signal.SIGKILL)
                    p.wait(30)


if __name__ == "__main__":
    main()
