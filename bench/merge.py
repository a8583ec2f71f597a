"""The exact time merge of input partitions (SPEC rule 2): what it costs and
what it holds, on the same generated hits, in one run of this script.

Sub-benchmarks (all by default, or pick some):

  --kafka   `protosessions run --until-end` (one process) on hits topics of 1, 4
            and 8 partitions keyed by client_id, new code; and the old code
            (`--old`, before the merge: identity shards 1, wall-time aligner)
            on the 1- and 4-partition topics. Targets of the issue: new 4
            partitions >= 0.9 x new 1 partition; new >= 0.9 x old.
  --procs   2 processes (`python -m bytewax.run flows.sessions:flow -w 1 -i I
            -a ADDRS`) vs 1 process on the 4-partition topic.
  --files   the same 4 partitions as JSONL files (`PROTOSESSIONS_INPUT`, one
            path a line), sinks /dev/null: 1 process vs 2 processes; then,
            to check the sessions, the same runs once more writing a file.
  --split   (extra, only when asked) `protosessions run` on the hits as 1, 4
            and 8 partition files: the merge's cost without Kafka.
  --ahead   4 partition files where partition 0's hits are shifted `--ahead-by`
            (1h) later in `server_received_time`: its reader runs ahead of the
            merge, so its hits wait. `protosessions run` with `--max-held-hits`
            at the default, unbounded and small (`--held-limits`).

Partitions: a hit goes to partition crc32(client_id) % n, in file order, in
both the Kafka topics (keyed by client_id, partition given explicitly) and the
files, so the 4-partition topic and the 4 files hold the same partitions.

Every run prints its sessions count and a hash of its sorted session ids.
Runs over the same partitions must agree (SPEC: the sessions are a function
of the partitions alone); the script flags a mismatch with "MISMATCH" (it
asserts nothing about time, and does not hide a mismatch either). Runs over
different partitionings (1 vs 4 vs 8) may legitimately differ where hits are
out of time order; old vs new on 1 partition should agree.

    python bench/merge.py --brokers 127.0.0.1:19592                  # everything, 1M hits
    python bench/merge.py --brokers 127.0.0.1:19592 --hits 300000    # under ~15 minutes
    python bench/merge.py --start-broker --kafka --rounds 2          # a, b, ..., a, b, ...
    python bench/merge.py --ahead --hits 300000                       # no broker needed

Wall time of each child includes its start-up and closing every open session
at the end of input. The machine may be noisy: compare ratios within one run.
"""

from __future__ import annotations

import hashlib
import os
import re
import socket
import statistics
import sys
import time
import uuid
import zlib
from bisect import bisect_right
from datetime import datetime, timezone
from pathlib import Path

import orjson

from common import (OUT, ROOT, Child, kafka_bench_parser, create_topics, end_offsets, hits_file,
                    kafka_broker, measure, measure_group, produce_file, topic_values)

from protosessions.timefmt import format_time_us, parse_time_us
from protosessions.units import parse_duration_us

BROKER_PORT = 19640
SUMMARY = re.compile(r"protosessions: \d+ hits read.*hits/s")
SESSION_ID = re.compile(rb'"session_id":"([^"]*)"')
TIME = re.compile(rb'("server_received_time":")([^"]*)(")')
CLIENT = re.compile(rb'"client_id":"([^"\\]*)"')


# -- data ---------------------------------------------------------------------------------

def client_id(line: bytes) -> bytes:
    m = CLIENT.search(line)
    if m:
        return m.group(1)
    try:
        return str(orjson.loads(line).get("client_id") or "").encode()
    except (orjson.JSONDecodeError, AttributeError):
        return b""


def partition_of(line: bytes, n: int) -> int:
    return zlib.crc32(client_id(line)) % n


def split(hits: Path, n: int, directory: Path, shift_us: int = 0) -> list[Path]:
    """The hits in `n` files by `partition_of`, each in file order (made once);
    partition 0's `server_received_time`s shifted by `shift_us` (nothing else
    in a line changes)."""
    paths = [directory / f"part{i}.jsonl" for i in range(n)]
    if all(p.exists() for p in paths):
        return paths
    directory.mkdir(parents=True, exist_ok=True)
    tmp = [p.with_suffix(".tmp") for p in paths]
    outs = [p.open("wb") for p in tmp]

    def shifted(m: re.Match) -> bytes:
        t = parse_time_us(m.group(2).decode())
        if t is None:
            return m.group(0)
        return m.group(1) + format_time_us(t + shift_us).encode() + m.group(3)

    try:
        with hits.open("rb") as f:
            for line in f:
                if not line.strip():
                    continue
                p = partition_of(line, n)
                if p == 0 and shift_us:
                    line = TIME.sub(shifted, line, count=1)
                outs[p].write(line)
    finally:
        for o in outs:
            o.close()
    for t, p in zip(tmp, paths):
        t.rename(p)
    return paths


def held_at_equal_pace(paths: list[Path], batch: int) -> tuple[int, int]:
    """(peak, hits) of a simulation: every partition read a batch at a time in
    turn, a hit held until the watermark (the least M of the partitions not
    ended) reaches its M. What an unbounded merge must hold at once."""
    ms: list[list[int]] = []
    for path in paths:
        m, out = 0, []
        with path.open("rb") as f:
            for line in f:
                t = TIME.search(line)
                us = parse_time_us(t.group(2).decode()) if t else None
                if us is not None:
                    m = max(m, us)
                    out.append(m)
        ms.append(out)
    peak, k = 0, 0
    while True:
        k += 1
        read = [min(len(m), k * batch) for m in ms]
        live = [m[r - 1] for m, r in zip(ms, read) if r < len(m) and r > 0]
        if not live:
            break
        wm = min(live)
        held = sum(r - bisect_right(m, wm, 0, r) for m, r in zip(ms, read))
        peak = max(peak, held)
    return peak, sum(len(m) for m in ms)


# -- sessions -----------------------------------------------------------------------------

def ids_hash(ids: list[bytes]) -> str:
    return hashlib.sha256(b"\n".join(sorted(ids))).hexdigest()[:16]


def session_id(value: bytes) -> bytes:
    m = SESSION_ID.search(value, 0, 200)
    return m.group(1) if m else str(orjson.loads(value)["session_id"]).encode()


def topic_sessions(brokers: str, topic: str) -> tuple[int, str]:
    ids = [session_id(v) for v in topic_values(brokers, topic)]
    return len(ids), ids_hash(ids)


def file_sessions(path: Path) -> tuple[int, str]:
    with path.open("rb") as f:
        ids = [session_id(line) for line in f if line.strip()]
    return len(ids), ids_hash(ids)


class Verdicts:
    """Session (count, hash) per named partitioning; a second run over the same
    partitions that disagrees is a MISMATCH."""

    def __init__(self) -> None:
        self.seen: dict[str, tuple[tuple[int, str], str]] = {}
        self.mismatches: list[str] = []

    def check(self, data: str, run: str, result: tuple[int, str], exact: bool = True) -> str:
        """`exact=False`: a run of code that does not promise the same sessions
        (the old code on several partitions); a difference is only noted."""
        if data not in self.seen:
            self.seen[data] = (result, run)
            return ""
        first, who = self.seen[data]
        if first == result:
            return f"= {who}"
        if not exact:
            return f"differs from {who} (no exact merge there)"
        self.mismatches.append(f"{data}: {run} {result} vs {who} {first}")
        return f"MISMATCH vs {who} {first[0]} {first[1]}"


# -- running ------------------------------------------------------------------------------

def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def child_env(cache: Path, old: Path | None = None, **options: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROTOSESSIONS_")}
    env["BYTEWAX_DATAFLOW_API_CACHE_PATH"] = str(cache)
    if old is not None:
        env["PYTHONPATH"] = str(old)  # wins over the editable install (cwd is `old` too)
    else:
        env.pop("PYTHONPATH", None)
    env.update({"PROTOSESSIONS_" + k.upper(): v for k, v in options.items()})
    return env


def check(what: str, children: list[Child]) -> None:
    for c in children:
        if c.exit_code != 0:
            raise SystemExit(f"{what} failed (exit {c.exit_code}):\n{c.stderr[-4000:]}")


def cluster(n: int, env: dict[str, str], logs: list[Path]) -> tuple[float, list[Child]]:
    """`n` processes of one cluster, `-w 1` each (n == 1: no -i/-a)."""
    cmd = [sys.executable, "-m", "bytewax.run", "flows.sessions:flow", "-w", "1"]
    if n == 1:
        cmds = [cmd]
    else:
        addrs = ";".join(f"127.0.0.1:{p}" for p in free_ports(n))
        cmds = [cmd + ["-i", str(i), "-a", addrs] for i in range(n)]
    g = measure_group(cmds, logs[:n], env=env)
    check(f"{n} processes: {' '.join(cmds[0])}", g.children)
    return g.seconds, g.children


def summary(stderr: str) -> str:
    lines = [ln.strip() for ln in stderr.splitlines() if SUMMARY.search(ln)]
    return lines[-1] if lines else ""


def mb(n: int) -> str:
    return f"{n / 1e6:.0f}"


HEAD = (f"{'run':34} {'hits':>8} {'seconds':>8} {'hits/s':>8} {'CPU s':>7} {'hits/CPU-s':>10} "
        f"{'peak RSS MB':>12} {'sessions':>9} {'ids hash':>16}  same as")

Rates = dict  # run name -> [(hits per wall second, hits per CPU second), ...]


def row(rates: Rates, name: str, n: int, secs: float, children: list[Child], sessions: int,
        h: str, same: str) -> str:
    """A table row (CPU: all the run's processes; peak RSS: each process's), and
    the run's rates recorded under `name`."""
    cpu = sum(c.cpu for c in children)
    rates.setdefault(name, []).append((n / secs, n / cpu))
    rss = "/".join(mb(c.peak_rss) for c in children)
    return (f"{name:34} {n:8d} {secs:8.2f} {n / secs:8.0f} {cpu:7.1f} {n / cpu:10.0f} "
            f"{rss:>12} {sessions:9d} {h:>16}  {same}")


def ratio_line(rates: Rates, label: str, a: str, b: str, target: float | None = None) -> str:
    """a/b of hits per wall second (best and median of the rounds) and of hits
    per CPU second (median): the CPU figure is the steadier on a busy machine."""
    if not rates.get(a) or not rates.get(b):
        return f"  {label}: no figures"
    parts = []
    for what, pick in (("wall best", lambda v: max(x[0] for x in v)),
                       ("wall median", lambda v: statistics.median(x[0] for x in v)),
                       ("CPU median", lambda v: statistics.median(x[1] for x in v))):
        r = pick(rates[a]) / pick(rates[b])
        met = "" if target is None else (" ok" if r >= target else " MISSED")
        parts.append(f"{what} {pick(rates[a]):.0f}/{pick(rates[b]):.0f} = {r:.3f}{met}")
    goal = f" (target >= {target:.2f})" if target is not None else ""
    return f"  {label}{goal}:\n      " + "; ".join(parts)


# -- sub-benchmarks -----------------------------------------------------------------------

def bench_kafka(args, brokers: str, topics: dict[int, str], n: int, cache: Path,
                verdicts: Verdicts, rates: Rates) -> None:
    py = sys.executable
    runs = [("new", 1), ("new", 4), ("new", 8)]
    if args.old:
        runs += [("old", 1), ("old", 4)]
    print(f"\n== kafka: `protosessions run --until-end`, 1 process, 1 worker "
          f"(new: {ROOT}, old: {args.old or 'skipped'})")
    print(HEAD, flush=True)
    for r in range(args.rounds):
        for code, parts in (runs if r % 2 == 0 else runs[::-1]):
            out = f"{topics[parts]}.{code}.r{r}"
            create_topics(brokers, [out + ".sessions", out + ".dead"], 1)
            old = Path(args.old) if code == "old" else None
            cli = "protosessions.cli" if old else "flows.cli"  # the old code's CLI module
            cmd = [py, "-m", cli, "run", "--kafka-brokers", brokers,
                   "--hits-topic", topics[parts], "--sessions-topic", out + ".sessions",
                   "--dead-letter-topic", out + ".dead", "--until-end", *args.run_args]
            c = measure(cmd, OUT / f"merge_kafka_{code}{parts}.stderr", cwd=old or ROOT,
                        env=child_env(cache, old))
            check(" ".join(cmd), [c])
            sessions = topic_sessions(brokers, out + ".sessions")
            dead = end_offsets(brokers, out + ".dead")
            name = f"{code} {parts} partition{'s' * (parts > 1)}"
            # The old code's wall-time aligner makes no exact merge: its runs on
            # several partitions may differ from each other (what the merge fixes).
            same = verdicts.check(f"{code}-{parts}p" if code == "old" else f"{parts}p",
                                  name, sessions, exact=code == "new" or parts == 1)
            print(row(rates, name, n, c.seconds, [c], *sessions,
                      same + (f" ({dead} dead)" if dead else "")), flush=True)
            if args.verbose:
                print(f"{'':34} {summary(c.stderr)}", flush=True)
    print(f"ratios over {args.rounds} round(s):")
    print(ratio_line(rates, "new 4 partitions / new 1 partition", "new 4 partitions",
                     "new 1 partition", 0.9))
    print(ratio_line(rates, "new 8 partitions / new 1 partition", "new 8 partitions",
                     "new 1 partition"))
    if args.old:
        print(ratio_line(rates, "new 1 partition / old 1 partition", "new 1 partition",
                         "old 1 partition", 0.9))
        print(ratio_line(rates, "new 4 partitions / old 4 partitions", "new 4 partitions",
                         "old 4 partitions", 0.9))
        print(ratio_line(rates, "new 4 partitions / old 1 partition", "new 4 partitions",
                         "old 1 partition", 0.9))
    old1, new1 = verdicts.seen.get("old-1p"), verdicts.seen.get("1p")
    if old1 and new1:
        print(f"  old vs new sessions on 1 partition: "
              f"{'identical' if old1[0] == new1[0] else 'DIFFERENT'}")
    print(flush=True)


def bench_procs(args, brokers: str, topic: str, n: int, cache: Path, verdicts: Verdicts,
                rates: Rates) -> None:
    print("\n== processes: `python -m bytewax.run flows.sessions:flow -w 1 [-i I -a ADDRS]`, "
          "the 4-partition topic, PROTOSESSIONS_UNTIL_END=true")
    print(HEAD.replace("peak RSS MB", "peak RSS MB/proc"), flush=True)
    for r in range(args.rounds):
        for procs in ((1, 2) if r % 2 == 0 else (2, 1)):
            out = f"{topic}.procs{procs}.r{r}"
            create_topics(brokers, [out + ".sessions", out + ".dead"], 1)
            env = child_env(cache, kafka_brokers=brokers, hits_topic=topic,
                            sessions_topic=out + ".sessions", dead_letter_topic=out + ".dead",
                            until_end="true")
            secs, children = cluster(procs, env, [OUT / f"merge_procs{procs}_{i}.stderr"
                                                  for i in range(procs)])
            sessions = topic_sessions(brokers, out + ".sessions")
            name = f"{procs} process{'es' * (procs > 1)}, 4 partitions"
            print(row(rates, name, n, secs, children, *sessions,
                      verdicts.check("4p", name, sessions)), flush=True)
    print(f"ratios over {args.rounds} round(s):")
    print(ratio_line(rates, "2 processes / 1 process (4 partitions)",
                     "2 processes, 4 partitions", "1 process, 4 partitions"))
    print(flush=True)


def bench_files(args, parts: list[Path], n: int, cache: Path, verdicts: Verdicts,
                rates: Rates) -> None:
    inputs = "\n".join(str(p) for p in parts)
    print(f"\n== files: `python -m bytewax.run flows.sessions:flow -w 1 [-i I -a ADDRS]`, "
          f"PROTOSESSIONS_INPUT = {len(parts)} files (one a line, {parts[0].parent}), "
          f"output and dead letters /dev/null")
    print(HEAD.replace("peak RSS MB", "peak RSS MB/proc"), flush=True)
    for r in range(args.rounds):
        counts = [int(x) for x in args.file_procs.split(",")]
        for procs in (counts if r % 2 == 0 else counts[::-1]):
            env = child_env(cache, input=inputs, output="/dev/null", dead_letter="/dev/null")
            secs, children = cluster(procs, env, [OUT / f"merge_files{procs}_{i}.stderr"
                                                  for i in range(procs)])
            name = f"{procs} process{'es' * (procs > 1)}, {len(parts)} files"
            print(row(rates, name, n, secs, children, 0, "-", "(sessions to /dev/null)"),
                  flush=True)
    print(f"ratios over {args.rounds} round(s):")
    for procs in (int(x) for x in args.file_procs.split(",")):
        if procs > 1:
            print(ratio_line(rates, f"{procs} processes / 1 process ({len(parts)} files)",
                             f"{procs} processes, {len(parts)} files",
                             f"1 process, {len(parts)} files"))
    if args.no_verify:
        return
    print("the sessions: the same runs writing a file (timed with the write, for the record)",
          flush=True)
    for procs in (1, 2):
        dest = OUT / f"merge_files{procs}.sessions.jsonl"
        env = child_env(cache, input=inputs, output=str(dest), dead_letter="/dev/null")
        secs, children = cluster(procs, env, [OUT / f"merge_files{procs}_{i}.stderr"
                                              for i in range(procs)])
        sessions = file_sessions(dest)
        dest.unlink()
        name = f"{procs} process{'es' * (procs > 1)}, {len(parts)} files, out"
        print(row(rates, name, n, secs, children, *sessions,
                  verdicts.check("4p", name, sessions)), flush=True)
    print(flush=True)


def bench_ahead(args, hits: Path, n: int, cache: Path, verdicts: Verdicts,
                rates: Rates) -> None:
    shift = parse_duration_us(args.ahead_by)
    parts = split(hits, 4, Path(args.dir) / f"merge_{hits.stem}" / f"ahead_{args.ahead_by}",
                  shift)
    peak, valid = held_at_equal_pace(parts, args.batch_size)
    sizes = [sum(1 for _ in p.open("rb")) for p in parts]
    print(f"\n== ahead: partition 0 of 4 shifted {args.ahead_by} later "
          f"({parts[0].parent}; hits per partition {sizes}); `protosessions run --input "
          f"P0 .. --input P3 --output FILE --dead-letter /dev/null --max-held-hits L`")
    print(f"   an unbounded merge, all partitions read at one pace in batches of "
          f"{args.batch_size}, would hold up to {peak} of the {valid} hits (simulated)")
    print(HEAD, flush=True)
    py = sys.executable
    limits = [int(x) for x in args.held_limits.split(",")]
    for r in range(args.rounds):
        for limit in (limits if r % 2 == 0 else limits[::-1]):
            dest = OUT / f"merge_ahead_{limit}.sessions.jsonl"
            cmd = [py, "-m", "flows.cli", "run", *[a for p in parts for a in
                                                  ("--input", str(p))],
                   "--output", str(dest), "--dead-letter", "/dev/null",
                   "--max-held-hits", str(limit), *args.run_args]
            c = measure(cmd, OUT / f"merge_ahead_{limit}.stderr", env=child_env(cache))
            check(" ".join(cmd), [c])
            sessions = file_sessions(dest)
            dest.unlink()
            name = f"--max-held-hits {limit}"
            print(row(rates, name, n, c.seconds, [c], *sessions,
                      verdicts.check(f"ahead-{args.ahead_by}", name, sessions)), flush=True)
            if args.verbose:
                print(f"{'':34} {summary(c.stderr)}", flush=True)
    print(flush=True)


def bench_split(args, hits: Path, n: int, cache: Path, verdicts: Verdicts,
                rates: Rates) -> None:
    """`protosessions run` on the hits as 1, 4 and 8 partition files: the merge's
    own cost, without Kafka's consumer per partition."""
    py = sys.executable
    base = Path(args.dir) / f"merge_{hits.stem}"
    inputs = {1: [hits], 4: split(hits, 4, base / "p4"), 8: split(hits, 8, base / "p8")}
    print(f"\n== split: `protosessions run --input P0 [--input P1 ..] --output /dev/null "
          f"--dead-letter /dev/null`, the hits as 1, 4 and 8 partition files ({base})")
    print(HEAD, flush=True)
    for r in range(args.rounds):
        for k in ((1, 4, 8) if r % 2 == 0 else (8, 4, 1)):
            cmd = [py, "-m", "flows.cli", "run",
                   *[a for p in inputs[k] for a in ("--input", str(p))],
                   "--output", "/dev/null", "--dead-letter", "/dev/null", *args.run_args]
            c = measure(cmd, OUT / f"merge_split{k}.stderr", env=child_env(cache))
            check(" ".join(cmd), [c])
            name = f"{k} file{'s' * (k > 1)}, 1 process"
            m = re.search(r"(\d+) sessions", summary(c.stderr))
            print(row(rates, name, n, c.seconds, [c], int(m.group(1)) if m else 0, "-",
                      "(count from the summary line)"), flush=True)
            if args.verbose:
                print(f"{'':34} {summary(c.stderr)}", flush=True)
    print(f"ratios over {args.rounds} round(s):")
    print(ratio_line(rates, "4 files / 1 file", "4 files, 1 process", "1 file, 1 process"))
    print(ratio_line(rates, "8 files / 1 file", "8 files, 1 process", "1 file, 1 process"))
    print(flush=True)


# -- main ---------------------------------------------------------------------------------

def main() -> None:
    ap = kafka_bench_parser(__doc__, BROKER_PORT)
    ap.add_argument("--kafka", action="store_true", help="sub-benchmark 1 (see above)")
    ap.add_argument("--procs", action="store_true", help="sub-benchmark 2")
    ap.add_argument("--files", action="store_true", help="sub-benchmark 3")
    ap.add_argument("--file-procs", default="1,2",
                    help="process counts of --files (1 among them), e.g. 1,2,4")
    ap.add_argument("--ahead", action="store_true", help="sub-benchmark 4")
    ap.add_argument("--split", action="store_true",
                    help="extra, not in the default set: 1 vs 4 vs 8 partition files, 1 process")
    ap.add_argument("--old", default="/work/wt-old",
                    help="checkout of the code before the merge ('' to skip its runs)")
    ap.add_argument("--rounds", type=int, default=1,
                    help="repeat each sub-benchmark's runs, every other round in reverse order")
    ap.add_argument("--ahead-by", default="1h", help="partition 0's shift (--ahead)")
    ap.add_argument("--held-limits", default="200000,100000000,20000",
                    help="--max-held-hits values (--ahead)")
    ap.add_argument("--batch-size", type=int, default=2000,
                    help="the job's default, for the simulation of --ahead only")
    ap.add_argument("--no-verify", action="store_true",
                    help="skip the --files runs that write the sessions to check them")
    ap.add_argument("--verbose", action="store_true", help="print each run's summary line")
    ap.add_argument("--dir", default=str(OUT), help="hits file cache")
    ap.add_argument("run_args", nargs="*", help="extra `protosessions run` flags, after --")
    args = ap.parse_args()
    if not (args.kafka or args.procs or args.files or args.ahead or args.split):
        args.kafka = args.procs = args.files = args.ahead = True
    kafka = args.kafka or args.procs
    if kafka and not args.brokers and not args.start_broker:
        ap.error("--kafka and --procs need --brokers HOST:PORT or --start-broker")
    if args.old and not (Path(args.old) / "protosessions").is_dir():
        ap.error(f"--old {args.old}: not a checkout of protosessions")

    work = Path(args.dir)
    hits = hits_file(args.hits, args.clients, args.seed, work)
    cache = work / "merge_api_cache"
    cache.mkdir(parents=True, exist_ok=True)
    n = sum(1 for line in hits.open("rb") if line.strip())
    print(f"{datetime.now(timezone.utc):%H:%M:%S} input: {hits} ({n} hits, {args.clients} "
          f"clients, seed {args.seed}, {hits.stat().st_size / 1e6:.0f} MB); "
          f"partition = crc32(client_id) % n; python {sys.executable}", flush=True)
    verdicts = Verdicts()
    rates: Rates = {}

    if args.files:
        parts4 = split(hits, 4, work / f"merge_{hits.stem}" / "p4")
    if kafka:
        with kafka_broker(args.brokers, args.start_broker, BROKER_PORT) as brokers:
            tag = f"merge-{uuid.uuid4().hex[:8]}"
            topics = {}
            for parts in ((1, 4, 8) if args.kafka else (4,)):
                topics[parts] = f"{tag}.hits{parts}"
                create_topics(brokers, [topics[parts]], parts)
                count, secs = produce_file(brokers, topics[parts], hits, "hits", client_id,
                                           lambda line, k=parts: partition_of(line, k))
                print(f"topic {topics[parts]}: {count} hits in {parts} partitions keyed by "
                      f"client_id, produced in {secs:.1f}s (not counted), broker {brokers}",
                      flush=True)
            # A fresh broker's JVM is slow until warm: read every topic once first.
            for parts, topic in topics.items():
                t0 = time.perf_counter()
                got = sum(1 for _ in topic_values(brokers, topic))
                print(f"warm-up: read {topic} back, {got} records in "
                      f"{time.perf_counter() - t0:.1f}s", flush=True)
            if args.kafka:
                bench_kafka(args, brokers, topics, n, cache, verdicts, rates)
            if args.procs:
                bench_procs(args, brokers, topics[4], n, cache, verdicts, rates)
    if args.files:
        bench_files(args, parts4, n, cache, verdicts, rates)
    if args.ahead:
        bench_ahead(args, hits, n, cache, verdicts, rates)
    if args.split:
        bench_split(args, hits, n, cache, verdicts, rates)

    print(f"{datetime.now(timezone.utc):%H:%M:%S} sessions per partitioning "
          f"(count, ids hash, first run):")
    for data, (result, who) in verdicts.seen.items():
        print(f"  {data:12} {result[0]:9d} {result[1]}  {who}")
    if verdicts.mismatches:
        print("MISMATCHES (runs over the same partitions that disagree; a bug):")
        for m in verdicts.mismatches:
            print("  " + m)
    else:
        print("no mismatch between runs over the same partitions")
    if rates and args.rounds > 1:
        print("hits per wall second, each round:")
        for k, vs in rates.items():
            print(f"  {k:34} {' '.join(f'{w:8.0f}' for w, _ in vs)}  "
                  f"(median {statistics.median(w for w, _ in vs):.0f})")


if __name__ == "__main__":
    main()
