"""Helpers shared by the benchmark scripts in bench/: a Kafka broker from
scripts/kafka.sh, fresh topics, producing lines to a topic, a topic's end
offsets, and a child process's wall time and peak RSS.

The scripts are run as `python bench/NAME.py`, so bench/ is on `sys.path` and
they `import common` as a sibling module. Importing it puts the checkout's root
on `sys.path` too, so `protosessions` and `flows` import from the checkout.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
OUT = ROOT / "bench" / "out"  # generated hits and scratch (git-ignored)
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


# -- broker and topics --------------------------------------------------------------------

def broker_cmd(cmd: str, port: int) -> str:
    """`scripts/kafka.sh start|stop` on our own port; returns the last stdout line
    (for `start`, the bootstrap address)."""
    env = {**os.environ, "KAFKA_PORT": str(port), "PYTHON": sys.executable}
    out = subprocess.run(["bash", str(ROOT / "scripts" / "kafka.sh"), cmd], env=env, check=True,
                         capture_output=True, text=True, timeout=180).stdout.strip()
    return out.splitlines()[-1] if out else ""


def add_broker_args(ap: argparse.ArgumentParser, port: int,
                    brokers_help: str = "HOST:PORT of a running broker (or --start-broker)") -> None:
    """`--brokers` (default $PROTOSESSIONS_KAFKA_BROKERS) and `--start-broker`."""
    ap.add_argument("--brokers", default=os.environ.get("PROTOSESSIONS_KAFKA_BROKERS"),
                    help=brokers_help)
    ap.add_argument("--start-broker", action="store_true",
                    help=f"start scripts/kafka.sh on port {port}, stop it at the end")


def kafka_bench_parser(doc: str | None, port: int) -> argparse.ArgumentParser:
    """The flags every Kafka benchmark takes: the broker, and the generated
    hits (`--hits`, `--clients`, `--seed`, as `hits_file` makes them)."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_broker_args(ap, port)
    ap.add_argument("--hits", type=int, default=1_000_000)
    ap.add_argument("--clients", type=int, default=50_000)
    ap.add_argument("--seed", type=int, default=1)
    return ap


def require_broker(ap: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if not args.brokers and not args.start_broker:
        ap.error("give --brokers HOST:PORT or --start-broker")


def hits_file(hits: int = 1_000_000, clients: int = 50_000, seed: int = 1,
              directory: Path = OUT) -> Path:
    """The generated benchmark hits file, made once (atomically) and reused."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"hits_{hits}_{clients}_{seed}.jsonl"
    if not path.exists():
        tmp = path.with_suffix(".tmp")
        cmd = [sys.executable, "-m", "flows.cli", "generate", "--hits", str(hits),
               "--clients", str(clients), "--seed", str(seed), "--output", str(tmp)]
        print(f"generating: $ {' '.join(cmd)}", flush=True)
        subprocess.run(cmd, check=True, cwd=ROOT)
        tmp.rename(path)
    return path


@contextmanager
def kafka_broker(brokers: str | None, start: bool, port: int) -> Iterator[str | None]:
    """The broker to use: `brokers` as given or, if `start`, scripts/kafka.sh
    started on `port` for the `with` block (stopped at its end, however it ends)."""
    if not start:
        yield brokers
        return
    address = broker_cmd("start", port)
    try:
        yield address
    finally:
        broker_cmd("stop", port)


def create_topics(brokers: str, names: list[str], partitions: int = 1,
                  configs: dict[str, dict[str, str]] | None = None) -> None:
    """Fresh topics of `partitions` partitions, replication factor 1. A topic
    without an entry in `configs` ({topic: {config: value}}) gets the broker's
    default configs, made by `protosessions topics create`'s own function; the
    others are made with their topic configs (e.g. a larger
    `max.message.bytes`, or `message.timestamp.type=LogAppendTime`)."""
    configs = configs or {}
    plain = [t for t in names if not configs.get(t)]
    special = [t for t in names if configs.get(t)]
    if plain:
        from flows.topics import create_topics as create

        create(brokers, plain, partitions, 1, {})
    if special:
        from confluent_kafka.admin import AdminClient, NewTopic

        admin = AdminClient({"bootstrap.servers": brokers})
        futures = admin.create_topics([NewTopic(t, num_partitions=partitions, replication_factor=1,
                                                config=configs[t]) for t in special],
                                      request_timeout=30)
        for f in futures.values():
            f.result(60)


def produce(brokers: str, topic: str, lines: Iterable[bytes],
            what: str | None = None,
            key_of: Callable[[bytes], bytes] | None = None,
            partition_of: Callable[[bytes], int] | None = None) -> tuple[int, float]:
    """Each non-empty line (trailing newline stripped) as one record, keyed by
    `key_of(line)`, else with no key (librdkafka's sticky partitioner spreads
    them), to partition `partition_of(line)` if given (else the partitioner
    picks it from the key); waits until every record is
    delivered and exits with an error if one is not. Returns (count, seconds).
    `what` names the records in that error ("to TOPIC" by default)."""
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
    for line in lines:
        line = line.rstrip(b"\n")
        if not line:
            continue
        while True:
            try:
                if partition_of is None:
                    p.produce(topic, value=line, key=key_of(line) if key_of else None,
                              on_delivery=on_delivery)
                else:
                    p.produce(topic, value=line, key=key_of(line) if key_of else None,
                              partition=partition_of(line), on_delivery=on_delivery)
                break
            except BufferError:
                p.poll(0.05)
        n += 1
        if n % 10_000 == 0:
            p.poll(0)
    left = p.flush(300)
    if left or errors:
        raise SystemExit(f"producing {what or f'to {topic}'} failed: {left} undelivered, "
                         f"errors {errors[:3]}")
    return n, time.perf_counter() - start


def produce_file(brokers: str, topic: str, path: Path, what: str | None = None,
                 key_of: Callable[[bytes], bytes] | None = None,
                 partition_of: Callable[[bytes], int] | None = None) -> tuple[int, float]:
    """`produce` every line of the file at `path`."""
    with path.open("rb") as f:
        return produce(brokers, topic, f, what, key_of, partition_of)


def end_offsets(brokers: str, topic: str) -> int:
    """Messages in `topic`: the sum of its partitions' high watermarks (fresh
    topics, no transactions)."""
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": brokers, "group.id": "bench-" + uuid.uuid4().hex})
    try:
        md = c.list_topics(topic, timeout=10).topics[topic]
        return sum(c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
                   for p in md.partitions)
    finally:
        c.close()


def topic_values(brokers: str, topic: str) -> Iterator[bytes]:
    """Every record value of `topic`, each partition read from its beginning to
    the end offset it has when this is called (fresh topics, no transactions)."""
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": brokers, "group.id": "bench-" + uuid.uuid4().hex,
                  "enable.auto.commit": False, "enable.partition.eof": False})
    try:
        md = c.list_topics(topic, timeout=10).topics[topic]
        ends = {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
                for p in md.partitions}
        left = {p: end for p, end in ends.items() if end > 0}
        if not left:
            return
        c.assign([TopicPartition(topic, p, 0) for p in left])
        deadline = time.monotonic() + 600
        while left:
            if time.monotonic() > deadline:
                raise SystemExit(f"reading {topic}: timed out with partitions {left} unread")
            for msg in c.consume(10_000, 1.0):
                if msg.error() is not None:
                    raise SystemExit(f"reading {topic}: {msg.error()}")
                p = msg.partition()
                if p in left:
                    yield msg.value() or b""
                    if msg.offset() + 1 >= left[p]:
                        del left[p]
    finally:
        c.close()


# -- children -----------------------------------------------------------------------------

class Child(NamedTuple):
    seconds: float  # wall time, start to exit
    peak_rss: int  # bytes (os.wait4's ru_maxrss, KiB on Linux, * 1024)
    exit_code: int
    stderr: str
    cpu: float = 0.0  # user + system seconds of the child (os.wait4's rusage): steadier than
    # wall time on a busy machine


def measure(cmd: list[str], log: Path | None = None, cwd: Path | str = ROOT,
            env: dict[str, str] | None = None) -> Child:
    """Run `cmd` in `cwd` (the checkout's root; another tree runs that tree's
    CLI module) to its end, stdout discarded and stderr
    written to `log` (or a temporary file); its wall seconds, peak RSS, exit
    code, stderr and CPU seconds. The caller decides what a non-zero exit means."""
    with (log.open("w+b") if log is not None else tempfile.TemporaryFile()) as err:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        secs = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        text = err.read().decode(errors="replace")
    return Child(secs, usage.ru_maxrss * 1024, proc.returncode, text,
                 usage.ru_utime + usage.ru_stime)


class Group(NamedTuple):
    seconds: float  # wall time, first start to last exit
    children: list[Child]  # each child's own wall time, peak RSS, exit code, stderr


def measure_group(cmds: list[list[str]], logs: list[Path] | None = None, cwd: Path | str = ROOT,
                  env: dict[str, str] | None = None, timeout: float = 3600) -> Group:
    """`measure` for processes that run together (the processes of one cluster):
    all started at once, waited for (os.wait4 each, for its peak RSS). If one
    fails or `timeout` passes, the others are killed; the caller decides what
    a non-zero exit means."""
    files = [(log.open("w+b") if log is not None else tempfile.TemporaryFile())
             for log in (logs or [None] * len(cmds))]
    try:
        start = time.perf_counter()
        procs = [subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=f)
                 for cmd, f in zip(cmds, files)]
        done: dict[int, tuple[float, int, int, float]] = {}  # index -> (secs, rss, exit, cpu)
        while len(done) < len(procs):
            for i, proc in enumerate(procs):
                if i in done:
                    continue
                pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
                if pid:
                    proc.returncode = os.waitstatus_to_exitcode(status)
                    done[i] = (time.perf_counter() - start, usage.ru_maxrss * 1024,
                               proc.returncode, usage.ru_utime + usage.ru_stime)
            failed = any(code != 0 for _, _, code, _ in done.values())
            if len(done) < len(procs) and (failed or time.perf_counter() - start > timeout):
                for i, proc in enumerate(procs):
                    if i not in done:
                        proc.kill()  # the children this call started, by their own pid
                continue
            time.sleep(0.02)
        secs = time.perf_counter() - start
        children = []
        for i, f in enumerate(files):
            f.seek(0)
            secs_i, rss, code, cpu = done[i]
            children.append(Child(secs_i, rss, code, f.read().decode(errors="replace"), cpu))
        return Group(secs, children)
    finally:
        for f in files:
            f.close()
