"""Recovery writes on a live stream (issue 17's first row): a 3-partition hits
topic on a real broker, `protosessions generate --rate R` producing live,
one `protosessions run` with `--recovery-dir` and the default snapshot
interval, and every `--every` seconds the bytes the job wrote in that span
(`wchar` of /proc/PID/io: the recovery partitions and state stores, and the
sessions it produced), its CPU and RSS, and the open proto-sessions it
reports. Snapshots that cost the new work keep the write rate flat while
the open state grows. With `--base TREE` a checkout of an earlier build is
measured first, on a fresh topic at the same rate; `--png` plots bytes
written per input hit against the open proto-sessions, a line per build.
A benchmark: it prints figures and asserts nothing.

    python bench/live_writes.py --start-broker --rate 1000 --duration 200
    python bench/live_writes.py --start-broker --base /tmp/base --png ../docs/live_writes.png
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
from png_plot import line_plot

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
    ap.add_argument("--base", type=Path, help="a checkout of an earlier build, measured first")
    ap.add_argument("--png", type=Path, help="plot bytes per hit against open proto-sessions here")
    ap.add_argument("run_args", nargs="*", help="extra `protosessions run` flags, after --")
    args = ap.parse_args()
    require_broker(ap, args)

    OUT.mkdir(parents=True, exist_ok=True)
    builds = ([("base", args.base.resolve())] if args.base else []) + [("new", ROOT)]
    series: dict[str, list[tuple[float, float]]] = {}
    with kafka_broker(args.brokers, args.start_broker, BROKER_PORT) as brokers:
        for name, tree in builds:
            rows = measure(brokers, tree, args)
            series[name] = [(n, mb * 1e6 / (args.rate * args.every)) for _, mb, n in rows if n]
    if args.png and line_plot(args.png, series, "open proto-sessions",
                              f"bytes written per input hit (each {args.every:.0f} s)",
                              f"Recovery writes, live {args.rate:.0f} hits/s"):
        print(f"plot: {args.png}")


def measure(brokers: str, tree: Path, args: argparse.Namespace) -> list[tuple[float, float, int]]:
    """Run the job of `tree` on a fresh live topic; `(t, MB written, open)` per row."""
    import psutil

    tag, topics = live_topics(brokers, "livewrites")
    cache = OUT / "live_writes_cache"
    rec = Path(tempfile.mkdtemp(dir=OUT)) / "recovery"
    py = sys.executable
    env = child_env(cache, tree if tree != ROOT else None)
    subprocess.run([py, "-m", "flows.cli", "recovery", "init", str(rec), "--partitions", "1"],
                   cwd=tree, env=env, check=True, capture_output=True)
    log = OUT / f"{tag}.stderr"
    gen = start_generator(brokers, topics["hits"], args.rate, args.clients,
                          args.duration + 60, cache)
    job = subprocess.Popen(
        [py, "-m", "flows.cli", "run", "--kafka-brokers", brokers, "--hits-topic",
         topics["hits"], "--sessions-topic", topics["sessions"], "--dead-letter-topic",
         topics["dead"], "--recovery-dir", str(rec), *args.run_args],
        cwd=tree, env=env, stdout=subprocess.DEVNULL, stderr=log.open("wb"),
        start_new_session=True)
    rows = []
    try:
        print(f"{tree}: live {args.rate:.0f} hits/s, {args.clients} clients, 3 partitions, "
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
            mb = (w1 - w0) / 1e6
            print(f"{now - t0:5.0f} {mb:11.1f} {mb / (now - last):6.2f} "
                  f"{100 * (c1 - c0) / (now - last):6.1f} {ps.memory_info().rss / 2**20:7.0f} "
                  f"{found[-1] if found else '-':>8}", flush=True)
            rows.append((now - t0, mb, int(found[-1]) if found else 0))
            w0, c0, last = w1, c1, now
    finally:
        for p in (job, gen):
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait(30)
    return rows


if __name__ == "__main__":
    main()
