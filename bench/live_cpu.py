"""CPU of the job against the live rate (issue 18): a 3-partition hits topic on
a real broker, `protosessions generate --rate R` producing live, and the CPU
the job's processes use over a window once it is up. One run measures a
baseline checkout (`--base`) and this one, interleaved rate by rate, for 1
and 2 processes, and draws the curve of CPU against rate into a PNG.

1 process is `protosessions run` as a new user runs it; 2 processes are
`python -m bytewax.run flows.sessions:flow -w 1 -i I -a ...` over loopback
(the StatefulSet's command). CPU is user + system time of every process of
the job (psutil) over the window, in % of one core; "read/s" is how fast the
job read over the window (its progress lines), to show it kept up. Sessions
of a live run depend on timing, so they are not compared here (the golden,
property and Kafka tests hold them). A benchmark: it asserts nothing.

    git worktree add /tmp/base main
    python bench/live_cpu.py --start-broker --base /tmp/base --window 20 \\
        --rates 0,10,100,1000,3000 --procs 1,2 --png docs/live_cpu.png
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

from common import OUT, ROOT, add_broker_args, create_topics, kafka_broker, require_broker
from merge import child_env, free_ports

BROKER_PORT = 19700
READ = re.compile(r"protosessions: (\d+) hits read")


def job_cmds(procs: int, brokers: str, topics: dict[str, str], extra: list[str]) -> list[list[str]]:
    py = sys.executable
    if procs == 1:
        return [[py, "-m", "flows.cli", "run", "--kafka-brokers", brokers,
                 "--hits-topic", topics["hits"], "--sessions-topic", topics["sessions"],
                 "--dead-letter-topic", topics["dead"], *extra]]
    addrs = ";".join(f"127.0.0.1:{p}" for p in free_ports(procs))
    return [[py, "-m", "bytewax.run", "flows.sessions:flow", "-w", "1", "-i", str(i), "-a", addrs]
            for i in range(procs)]


def live_topics(brokers: str, prefix: str) -> tuple[str, dict[str, str]]:
    """A fresh tag and its topics: a 3-partition hits topic, sessions, dead letters."""
    tag = f"{prefix}-{uuid.uuid4().hex[:8]}"
    topics = {"hits": f"{tag}.hits", "sessions": f"{tag}.sessions", "dead": f"{tag}.dead"}
    create_topics(brokers, [topics["hits"]], partitions=3)
    create_topics(brokers, [topics["sessions"], topics["dead"]])
    return tag, topics


def start_generator(brokers: str, topic: str, rate: float, clients: int, seconds: float,
                    cache: Path) -> subprocess.Popen:
    """`protosessions generate --rate` producing live into `topic` for `seconds`."""
    return subprocess.Popen(
        [sys.executable, "-m", "flows.cli", "generate", "--kafka-brokers", brokers,
         "--hits-topic", topic, "--rate", str(rate), "--clients", str(clients),
         "--duration", f"{int(seconds)}s"],
        cwd=ROOT, env=child_env(cache), stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL, start_new_session=True)


def cpu_seconds(procs: list) -> float:
    """User + system seconds of the job's processes (and their children)."""
    import psutil

    total = 0.0
    for p in procs:
        try:
            ps = psutil.Process(p.pid)
            for q in [ps, *ps.children(recursive=True)]:
                t = q.cpu_times()
                total += t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return total


def hits_read(logs: list[Path]) -> int:
    """Hits read so far, from the latest progress line of each process."""
    n = 0
    for log in logs:
        found = READ.findall(log.read_text(errors="replace")) if log.exists() else []
        n += int(found[-1]) if found else 0
    return n


def measure(tree: Path, base: bool, procs: int, rate: float, brokers: str, args: argparse.Namespace
            ) -> tuple[float, float]:
    """(% of one core, hits read per second) of one job over the window."""
    tag, topics = live_topics(brokers, "livecpu")
    cache = OUT / "live_cpu_cache"
    env = child_env(cache, tree if base else None, kafka_brokers=brokers,
                    hits_topic=topics["hits"], sessions_topic=topics["sessions"],
                    dead_letter_topic=topics["dead"])
    extra = args.run_args
    if procs > 1 and extra:
        raise SystemExit("extra run flags go with --procs 1 only")
    logs = [OUT / f"live_cpu_{tag}_{i}.stderr" for i in range(procs)]
    gen = None
    jobs: list[subprocess.Popen] = []
    try:
        if rate > 0:
            gen = start_generator(brokers, topics["hits"], rate, args.clients,
                                  args.warmup + args.window + 30, cache)
        for cmd, log in zip(job_cmds(procs, brokers, topics, extra), logs):
            jobs.append(subprocess.Popen(["nice", "-n", "0", *cmd], cwd=tree, env=env,
                                         stdout=subprocess.DEVNULL, stderr=log.open("wb"),
                                         start_new_session=True))
        time.sleep(args.warmup)
        for j in jobs:
            if j.poll() is not None:
                raise SystemExit(f"the job exited ({j.returncode}); see {logs[0]}")
        c0, r0, w0 = cpu_seconds(jobs), hits_read(logs), time.monotonic()
        time.sleep(args.window)
        c1, r1, w1 = cpu_seconds(jobs), hits_read(logs), time.monotonic()
        return 100 * (c1 - c0) / (w1 - w0), (r1 - r0) / (w1 - w0)
    finally:
        for p in [*jobs, *([gen] if gen else [])]:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait(30)


def plot(results: dict, rates: list[float], procs: list[int], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=100)
    xs = [max(r, 1.0) for r in rates]  # log axis: idle drawn at 1 hit/s
    for name, style in (("base", "--"), ("new", "-")):
        for n in procs:
            ys = [results[(name, n, r)][0] for r in rates]
            ax.plot(xs, ys, style, marker="o", label=f"{name}, {n} process{'es' if n > 1 else ''}")
    ax.set_xscale("log")
    ax.set_xlabel("live rate, hits/s (idle drawn at 1)")
    ax.set_ylabel("CPU of the job, % of one core")
    ax.set_title(title, fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    add_broker_args(ap, BROKER_PORT)
    ap.add_argument("--base", required=True, help="checkout of the baseline (e.g. main)")
    ap.add_argument("--rates", default="0,10,100,1000,3000", help="hits/s, comma-separated")
    ap.add_argument("--procs", default="1,2", help="process counts, comma-separated")
    ap.add_argument("--window", type=float, default=20.0, help="seconds of CPU measured")
    ap.add_argument("--warmup", type=float, default=10.0, help="seconds before the window")
    ap.add_argument("--clients", type=int, default=1000, help="the generator's clients")
    ap.add_argument("--png", default=str(ROOT / "docs" / "live_cpu.png"))
    ap.add_argument("run_args", nargs="*", help="extra `protosessions run` flags (1 process)")
    args = ap.parse_args()
    require_broker(ap, args)
    rates = [float(x) for x in args.rates.split(",")]
    procs = [int(x) for x in args.procs.split(",")]
    base = Path(args.base).resolve()
    OUT.mkdir(parents=True, exist_ok=True)

    results: dict = {}
    with kafka_broker(args.brokers, args.start_broker, BROKER_PORT) as brokers:
        print(f"window {args.window:.0f}s after {args.warmup:.0f}s warm-up; base {base}; "
              f"3-partition hits topic; {os.cpu_count()} cores", flush=True)
        print(f"{'procs':>5} {'rate':>6} {'run':5} {'CPU %':>7} {'read/s':>8}", flush=True)
        k = 0
        for n in procs:
            for r in rates:
                order = [("base", base), ("new", ROOT)]
                if k % 2:
                    order.reverse()
                k += 1
                for name, tree in order:
                    cpu, read = measure(tree, name == "base", n, r, brokers, args)  # type: ignore[arg-type]
                    results[(name, n, r)] = (cpu, read)
                    print(f"{n:5d} {r:6.0f} {name:5} {cpu:7.1f} {read:8.0f}", flush=True)
    print("\nsummary: CPU % of one core (base -> new)")
    for n in procs:
        idle_b, idle_n = results[("base", n, rates[0])][0], results[("new", n, rates[0])][0]
        for r in rates:
            b, nw = results[("base", n, r)][0], results[("new", n, r)][0]
            print(f"  {n} proc  {r:6.0f} hits/s: {b:6.1f} -> {nw:6.1f}   "
                  f"(above the first rate's: {b - idle_b:6.1f} -> {nw - idle_n:6.1f})")
    plot(results, rates, procs, Path(args.png),
         f"protosessions job CPU against live rate ({args.window:.0f}s windows, "
         f"{os.cpu_count()} shared cores)")
    print(f"curve: {args.png}")


if __name__ == "__main__":
    main()
