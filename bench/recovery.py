"""Cost of Bytewax recovery for protosessions, in one run on the same data:

1. Throughput, file mode: the same hits file through `protosessions run` (a)
   without recovery and (b) with `--recovery-dir` (fresh, `--partitions`) and
   `--snapshot-interval 1s`; seconds, hits/s, the (b)/(a) ratio and the final
   recovery store size.
2. Recovery store size after N hits, Kafka streaming (no --until-end, so
   nothing is closed at the end): the job reads the whole hits topic with
   snapshots every 1 s, (i) `--session-duration 1m` (few proto-sessions open at
   the end) and (ii) `--session-duration 24h --max-duration 48h` (many open);
   once `protosessions_hits_in_total` reaches N, 3 s more for a snapshot, one
   last scrape, SIGKILL. Prints the store's file sizes, the bytes of the live
   snapshots in it, and the open proto-sessions, next to the distinct clients
   of the input (keys ever seen).
3. Time to resume with K open proto-sessions: K hits, one per client (own
   IP each, nothing joins), streamed with `--session-duration 24h`, consumed,
   3 s, SIGKILL; then the job restarts on the same store and the time from
   process start until `/metrics` first answers and until
   `protosessions_open_proto_sessions` reports K is measured (polling every
   50 ms).

Every child runs in its own process group and is killed with SIGKILL (parts 2
and 3) or runs to EOF (part 1). A benchmark: it prints figures and asserts
nothing about time.

    python bench/recovery.py --brokers 127.0.0.1:9092
    python bench/recovery.py --start-broker                  # scripts/kafka.sh on port 19700
    python bench/recovery.py --start-broker --parts 3 --resume-clients 20000
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

import orjson

from common import (OUT, ROOT, add_broker_args, hits_file, create_topics, end_offsets, kafka_broker, measure,
                    produce, produce_file)
from protosessions.timefmt import format_time_us, wall_now_us

BROKER_PORT = 19700
MAX_MESSAGE = 16 * 1024 * 1024  # = the sink's producer message.max.bytes
# Topic configs of a sessions topic: a session of many hits is over the
# broker's 1 MB default.
BIG = {"max.message.bytes": str(MAX_MESSAGE)}
PY = sys.executable
CLI = [PY, "-m", "flows.cli"]


def show(cmd: list[str], env: dict[str, str] | None = None) -> str:
    """A command as one copy-pastable shell line (with the env vars that matter)."""
    prefix = "".join(f"{k}={shlex.quote(v)} " for k, v in (env or {}).items())
    return prefix + " ".join(shlex.quote(c) for c in cmd)


def say(text: str = "") -> None:
    print(text, flush=True)


# -- recovery store -----------------------------------------------------------------------

def init_store(path: Path, partitions: int) -> list[str]:
    shutil.rmtree(path, ignore_errors=True)
    cmd = [*CLI, "recovery", "init", str(path), "--partitions", str(partitions)]
    subprocess.run(cmd, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    return cmd


def store_files(path: Path) -> dict[str, int]:
    return {f.name: f.stat().st_size for f in sorted(path.iterdir()) if f.is_file()}


def live_snapshot_bytes(path: Path) -> tuple[int, int, int]:
    """(bytes, keys, epoch) of the newest snapshot of every (step, key) that
    still has state, read from a copy of the store (so the store itself, and
    its WAL after a SIGKILL, are left exactly as the job left them)."""
    total = keys = epoch = 0
    with tempfile.TemporaryDirectory(prefix="recbench-") as tmp:
        for f in path.iterdir():
            shutil.copy2(f, tmp)
        for db in sorted(Path(tmp).glob("part-*.sqlite3")):
            con = sqlite3.connect(db)
            try:
                rows = con.execute(
                    "SELECT s.ser_change, s.snap_epoch FROM snaps s JOIN "
                    "(SELECT step_id, state_key, MAX(snap_epoch) e FROM snaps "
                    " GROUP BY step_id, state_key) m "
                    "ON s.step_id = m.step_id AND s.state_key = m.state_key "
                    "AND s.snap_epoch = m.e").fetchall()
            finally:
                con.close()
            for blob, e in rows:
                epoch = max(epoch, e)
                if blob is not None:
                    total += len(blob)
                    keys += 1
    return total, keys, epoch


def describe_store(path: Path, indent: str = "    ") -> int:
    files = store_files(path)
    total = sum(files.values())
    live, keys, epoch = live_snapshot_bytes(path)
    say(f"{indent}recovery store {path}: {total / 1e6:.1f} MB in files "
        f"({', '.join(f'{n} {s / 1e6:.1f} MB' for n, s in files.items())})")
    say(f"{indent}live snapshots in it: {live / 1e6:.1f} MB over {keys} keys (newest epoch {epoch})")
    return total


# -- children -----------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def api_env(port: int) -> dict[str, str]:
    return {"BYTEWAX_DATAFLOW_API_ENABLED": "true", "BYTEWAX_DATAFLOW_API_PORT": str(port),
            "BYTEWAX_DATAFLOW_API_CACHE_PATH": str(OUT)}  # its dataflow.json: not the checkout


def scrape(port: int, timeout: float = 1.0) -> dict[str, float] | None:
    """Unlabelled samples of /metrics, or None while it does not answer."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=timeout) as r:
            text = r.read().decode()
    except OSError:
        return None
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#") and "{" not in line:
            name, _, value = line.rpartition(" ")
            try:
                out[name] = float(value)
            except ValueError:
                pass
    return out


class Job:
    """`protosessions run` streaming in its own process group (SIGKILLed at the end)."""

    def __init__(self, args: list[str], port: int, log: Path) -> None:
        self.env = api_env(port)
        self.cmd = [*CLI, "run", *args]
        self.port = port
        self.log = log
        self._err = log.open("wb")
        self.start = time.perf_counter()
        self.proc = subprocess.Popen(self.cmd, cwd=ROOT, env={**os.environ, **self.env},
                                     stdout=subprocess.DEVNULL, stderr=self._err,
                                     start_new_session=True)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def fail(self, why: str) -> None:
        self.kill()
        tail = self.log.read_text(errors="replace")[-3000:]
        raise SystemExit(f"{why}: {show(self.cmd, self.env)}\n{tail}")

    def wait_hits(self, n: int, timeout: float) -> tuple[float, dict[str, float]]:
        """Scrape every 0.25 s until hits_in reaches n; (seconds since start, last scrape)."""
        deadline = time.perf_counter() + timeout
        last: dict[str, float] = {}
        while True:
            if not self.alive():
                self.fail(f"job exited ({self.proc.returncode}) before reading {n} hits")
            m = scrape(self.port)
            if m:
                last = m
                if m.get("protosessions_hits_in_total", 0) >= n:
                    return time.perf_counter() - self.start, m
            if time.perf_counter() > deadline:
                say(f"    TIMEOUT after {timeout:.0f}s: "
                    f"{last.get('protosessions_hits_in_total', 0):.0f} of {n} hits read")
                return time.perf_counter() - self.start, last
            time.sleep(0.25)

    def kill(self) -> None:
        if self.alive():
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        self._err.close()


def stream_args(brokers: str, hits: str, sessions: str, dead: str, store: Path,
                extra: list[str]) -> list[str]:
    return ["--kafka-brokers", brokers, "--hits-topic", hits, "--sessions-topic", sessions,
            "--dead-letter-topic", dead, "--recovery-dir", str(store),
            "--snapshot-interval", "1s", *extra]


# -- part 1 -------------------------------------------------------------------------------

def part1(hits: Path, n: int, work: Path, partitions: int) -> None:
    say(f"== 1. file mode throughput, {n} hits ({hits.name}), snapshots every 1 s vs none")
    results = {}
    for label, rec in (("(a) no recovery", False), ("(b) recovery, snapshot 1s", True)):
        out, dead = work / f"rec1_{'b' if rec else 'a'}.jsonl", work / f"rec1_{'b' if rec else 'a'}.dead.jsonl"
        for f in (out, dead):
            f.unlink(missing_ok=True)
        cmd = [*CLI, "run", "--input", str(hits), "--output", str(out), "--dead-letter", str(dead)]
        store = work / "rec1_store"
        if rec:
            say(f"    $ {show(init_store(store, partitions))}")
            cmd += ["--recovery-dir", str(store), "--snapshot-interval", "1s"]
        say(f"    $ {show(cmd)}")
        child = measure(cmd, work / f"rec1_{'b' if rec else 'a'}.stderr")
        if child.exit_code != 0:
            raise SystemExit(f"failed: {show(cmd)}\n{child.stderr[-3000:]}")
        secs = results[rec] = child.seconds
        summary = [ln for ln in child.stderr.splitlines() if "hits/s" in ln]
        say(f"    {label}: {secs:.2f} s, {n / secs:.0f} hits/s, peak RSS "
            f"{child.peak_rss / 1024 / 1e3:.0f} MB, output {out.stat().st_size / 1e6:.0f} MB")
        if summary:
            say(f"      {summary[-1].strip()}")
        if rec:
            describe_store(store, "      ")
    say(f"    ratio (b)/(a): time {results[True] / results[False]:.2f}, "
        f"hits/s {results[False] / results[True]:.2f}")
    say()


# -- part 2 -------------------------------------------------------------------------------

def distinct_keys(path: Path) -> tuple[int, int]:
    """(distinct client_id, distinct (property_id, client_id)) of a hits file."""
    clients, keys = set(), set()
    loads = orjson.loads
    with path.open("rb") as f:
        for line in f:
            h = loads(line)
            clients.add(h["client_id"])
            keys.add((h["property_id"], h["client_id"]))
    return len(clients), len(keys)


def part2(brokers: str, hits: Path, work: Path, partitions: int, timeout: float) -> None:
    tag = f"recbench-{uuid.uuid4().hex[:8]}"
    topic = f"{tag}.hits"
    say("== 2. recovery store size after the whole hits topic, Kafka streaming, snapshot 1s")
    create_topics(brokers, [topic])
    n, secs = produce_file(brokers, topic, hits)
    assert end_offsets(brokers, topic) == n
    say(f"    produced {n} hits of {hits.name} to {topic} (1 partition) in {secs:.1f}s (not counted)")
    clients, keys = distinct_keys(hits)
    say(f"    input: {clients} distinct client_id, {keys} distinct (property_id, client_id) keys ever seen")
    rows = []
    for label, extra in (("(i) session-duration 1m", ["--session-duration", "1m"]),
                         ("(ii) session-duration 24h, max 48h",
                          ["--session-duration", "24h", "--max-duration", "48h"])):
        i = len(rows)
        sessions, dead = f"{tag}.r{i}.sessions", f"{tag}.r{i}.dead"
        create_topics(brokers, [sessions, dead], configs={sessions: BIG})
        store = work / f"rec2_store_{i}"
        say(f"  {label}")
        say(f"    $ {show(init_store(store, partitions))}")
        job = Job(stream_args(brokers, topic, sessions, dead, store, extra), free_port(),
                  work / f"rec2_{i}.stderr")
        say(f"    $ {show(job.cmd, job.env)}   # then SIGKILL to its process group")
        took, m = job.wait_hits(n, timeout)
        time.sleep(3)
        m = scrape(job.port) or m
        job.kill()
        read = m.get("protosessions_hits_in_total", 0)
        open_ = m.get("protosessions_open_proto_sessions", 0)
        say(f"    {read:.0f} hits read in {took:.1f}s (incl. start-up), killed 3 s later; last scrape: "
            f"{open_:.0f} open proto-sessions")
        size = describe_store(store)
        live, _, _ = live_snapshot_bytes(store)
        rows.append((label, open_, size, live, end_offsets(brokers, sessions)))
    say(f"    {'run':36} {'open':>8} {'store MB':>9} {'live MB':>8} {'bytes/open':>11}  sessions out")
    for label, open_, size, live, out in rows:
        per = f"{live / open_:11.0f}" if open_ else f"{'-':>11}"
        say(f"    {label:36} {open_:8.0f} {size / 1e6:9.1f} {live / 1e6:8.1f} {per}  {out}")
    say(f"    (keys ever seen: {keys}; the store holds the open proto-sessions, not every key)")
    say()


# -- part 3 -------------------------------------------------------------------------------

def one_hit_per_client(k: int, start_us: int):
    """K hits, one per client, each with its own IP (nothing joins), 1 ms apart."""
    for i in range(k):
        yield orjson.dumps({"id": f"r{i:015x}", "client_id": f"{1000000000 + i}.1735689600",
                            "property_id": "G-RESUME",
                            "server_received_time": format_time_us(start_us + i * 1000),
                            "ip": f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}"})


def part3(brokers: str, k: int, work: Path, partitions: int, timeout: float) -> None:
    tag = f"recbench-{uuid.uuid4().hex[:8]}"
    topic, sessions, dead = f"{tag}.hits", f"{tag}.sessions", f"{tag}.dead"
    say(f"== 3. time to resume with {k} open proto-sessions (Kafka streaming, snapshot 1s)")
    create_topics(brokers, [topic, sessions, dead], configs={sessions: BIG})
    # Hit times end a little before now: no hit is in the future, none expires in 24 h.
    start_us = wall_now_us() - k * 1000 - 60_000_000
    n, secs = produce(brokers, topic, one_hit_per_client(k, start_us))
    say(f"    produced {n} hits (one per client, own IP each) to {topic} in {secs:.1f}s")
    store = work / "rec3_store"
    say(f"    $ {show(init_store(store, partitions))}")
    args = stream_args(brokers, topic, sessions, dead, store, ["--session-duration", "24h"])
    job = Job(args, free_port(), work / "rec3_first.stderr")
    say(f"    first run: $ {show(job.cmd, job.env)}   # then SIGKILL")
    took, m = job.wait_hits(n, timeout)
    time.sleep(3)
    m = scrape(job.port) or m
    job.kill()
    say(f"    first run: {m.get('protosessions_hits_in_total', 0):.0f} hits read in {took:.1f}s, "
        f"{m.get('protosessions_open_proto_sessions', 0):.0f} open at the kill")
    describe_store(store)

    job = Job(args, free_port(), work / "rec3_resume.stderr")
    say(f"    resume:    $ {show(job.cmd, job.env)}   # same store; SIGKILL at the end")
    first_answer = full = None
    last: dict[str, float] = {}
    deadline = job.start + timeout
    while time.perf_counter() < deadline:
        if not job.alive():
            job.fail(f"resumed job exited ({job.proc.returncode})")
        m = scrape(job.port, timeout=0.5)
        now = time.perf_counter() - job.start
        if m is not None:
            last = m
            if first_answer is None:
                first_answer = now
                first_open = m.get("protosessions_open_proto_sessions", 0)
            if m.get("protosessions_open_proto_sessions", 0) >= k:
                full = now
                break
        time.sleep(0.05)
    job.kill()
    if first_answer is None:
        say(f"    /metrics never answered within {timeout:.0f}s")
    else:
        say(f"    process start -> /metrics first answers: {first_answer:.2f} s "
            f"(open then: {first_open:.0f})")
    if full is None:
        say(f"    open proto-sessions never reached {k} within {timeout:.0f}s "
            f"(last: {last.get('protosessions_open_proto_sessions', 0):.0f})")
    else:
        say(f"    process start -> protosessions_open_proto_sessions = {k}: {full:.2f} s "
            f"(after /metrics answered: {full - first_answer:.2f} s)")
    say(f"    hits read by the resumed job: {last.get('protosessions_hits_in_total', 0):.0f} "
        "(0: it resumed at the snapshotted offsets)")
    say()


# -- main ---------------------------------------------------------------------------------

def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    add_broker_args(ap, BROKER_PORT,
                    "HOST:PORT of a running broker (parts 2 and 3), or --start-broker")
    ap.add_argument("--broker-port", type=int, default=BROKER_PORT)
    ap.add_argument("--parts", default="1,2,3", help="which parts to run, e.g. 1,3")
    ap.add_argument("--hits", type=int, default=1_000_000)
    ap.add_argument("--clients", type=int, default=50_000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--resume-clients", type=int, default=100_000,
                    help="part 3: open proto-sessions to resume (one hit per client)")
    ap.add_argument("--partitions", type=int, default=1, help="of each fresh recovery store")
    ap.add_argument("--timeout", type=float, default=600,
                    help="per streaming job: give up waiting for its hits after this long")
    ap.add_argument("--dir", default=str(OUT), help="hits cache and scratch")
    args = ap.parse_args()
    parts = {int(p) for p in args.parts.split(",") if p.strip()}
    if parts & {2, 3} and not args.brokers and not args.start_broker:
        ap.error("parts 2 and 3 need --brokers HOST:PORT or --start-broker")

    work = Path(args.dir)
    work.mkdir(parents=True, exist_ok=True)
    hits = (hits_file(args.hits, args.clients, args.seed, work) if parts & {1, 2}
            else work / f"hits_{args.hits}_{args.clients}_{args.seed}.jsonl")
    say(f"python {PY}; {os.cpu_count()} cores; 1 worker; recovery stores with "
        f"{args.partitions} partition(s); scratch in {work}")
    say()

    start = bool(args.start_broker and parts & {2, 3})
    with kafka_broker(args.brokers, start, args.broker_port) as brokers:
        if start:
            say(f"broker: KAFKA_PORT={args.broker_port} bash scripts/kafka.sh start -> {brokers}")
            say()
        if 1 in parts:
            part1(hits, args.hits, work, args.partitions)
        if 2 in parts:
            part2(brokers, hits, work, args.partitions, args.timeout)
        if 3 in parts:
            part3(brokers, args.resume_clients, work, args.partitions, args.timeout)


if __name__ == "__main__":
    main()
