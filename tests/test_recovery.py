"""Crash and resume: SIGKILL at random moments, restart on the same recovery
store, and the sessions (deduplicated by session_id) equal an uninterrupted
run's, hit for hit; no two records with one session_id differ."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import orjson
import pytest

from protosessions.generate import write_hits
from recovery_support import last_epoch, read_back

HITS = 200_000


@pytest.fixture(scope="module")
def hits_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("recovery") / "hits.jsonl"
    with path.open("wb") as f:
        write_hits(f, HITS, 10_000, seed=11, start=datetime(2025, 3, 1, tzinfo=timezone.utc))
    return path


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "flows.cli", *args]


def run_killed(cmd: list[str], store: Path, epochs: int) -> bool:
    """Start `cmd` and SIGKILL it once it has snapshotted `epochs` more
    epochs into `store`: a moment set by its progress, not by the clock, so
    a faster build is still killed mid-run. True if it was still running."""
    start = last_epoch(store)
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)
    while proc.poll() is None and last_epoch(store) < start + epochs:
        time.sleep(0.05)
    if proc.poll() is not None:
        assert proc.returncode == 0, proc.stderr.read().decode()
        return False
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(30)
    return True


def run_to_end(cmd: list[str]) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr


def sessions_by_id(records: list[bytes]) -> dict[str, dict]:
    """Deduplicate by session_id, failing if two records with one id differ."""
    out: dict[str, dict] = {}
    for raw in records:
        s = orjson.loads(raw)
        first = out.setdefault(s["session_id"], s)
        assert first == s, f"two different records for session {s['session_id']}"
    return out


def file_records(path: Path) -> list[bytes]:
    return [line for line in path.read_bytes().split(b"\n") if line.strip()]


@pytest.fixture(scope="module")
def reference(hits_file, tmp_path_factory) -> dict[str, dict]:
    out = tmp_path_factory.mktemp("ref") / "sessions.jsonl"
    run_to_end(cli("run", "--input", str(hits_file), "--output", str(out),
                   "--dead-letter", str(out) + ".dead"))
    ref = sessions_by_id(file_records(out))
    assert sum(s["hit_count"] for s in ref.values()) > HITS * 0.9
    return ref


@pytest.mark.parametrize("budget", ["0", "1MiB"])
def test_file_input_survives_three_sigkills(hits_file, reference, tmp_path, budget) -> None:
    """Also with a memory budget far below the open hits (16 KiB a shard):
    their blocks leave RAM for the state store and are read back at close."""
    rec, out = tmp_path / "rec", tmp_path / "sessions.jsonl"
    run_to_end(cli("recovery", "init", str(rec), "--partitions", "2"))
    cmd = cli("run", "--input", str(hits_file), "--output", str(out), "--dead-letter",
              str(tmp_path / "dead.jsonl"), "--recovery-dir", str(rec), "--snapshot-interval", "1s",
              "--memory-budget", budget)
    rng = random.Random(os.getpid())
    kills = sum(run_killed(cmd, rec, rng.choice([1, 2])) for _ in range(3))
    assert kills >= 2, "the run finished before it could be killed: make the input larger"
    run_to_end(cmd)
    got = sessions_by_id(file_records(out))
    assert got == reference
    assert len(file_records(out)) == len(reference)  # the file sink rewinds: no duplicates
    # a store reads a proto-session's rows back only for hits the budget moved out
    assert read_back(rec) == (budget != "0")


def test_rescaling_two_workers_then_one_then_three(hits_file, reference, tmp_path) -> None:
    rec, out = tmp_path / "rec", tmp_path / "sessions.jsonl"
    run_to_end(cli("recovery", "init", str(rec), "--partitions", "3"))
    base = cli("run", "--input", str(hits_file), "--output", str(out), "--dead-letter",
               str(tmp_path / "dead.jsonl"), "--recovery-dir", str(rec), "--snapshot-interval", "1s")
    assert run_killed(base + ["--workers", "2"], rec, 2)
    assert run_killed(base + ["--workers", "1"], rec, 2)
    run_to_end(base + ["--workers", "3"])
    assert sessions_by_id(file_records(out)) == reference


@pytest.mark.kafka
@pytest.mark.parametrize("budget", ["0", "1MiB"])
def test_kafka_input_survives_three_sigkills(hits_file, tmp_path, budget) -> None:
    """Three partitions keyed by client_id, killed three times while catching
    up: each session_id is only ever written with one content, and the
    distinct sessions are those of one file holding the partitions' time merge
    (also with a memory budget far below the open hits)."""
    from kafka_support import bootstrap, consume_all, produce, topics
    from protosessions.config import Settings
    from protosessions.merge import merged

    brokers = bootstrap()
    t = topics(brokers, 3, prefix="crash")
    lines = file_records(hits_file)
    produce(brokers, t["hits"], lines, keys=[orjson.loads(raw)["client_id"] for raw in lines])
    parts: list[list[bytes]] = [[], [], []]
    for m in consume_all(brokers, t["hits"], expect=len(lines), timeout=120):
        parts[m.partition()].append(m.value())
    assert all(parts), "keyed by client, every partition has hits"
    in_order = tmp_path / "merged.jsonl"
    in_order.write_bytes(b"\n".join(merged(parts, Settings())) + b"\n")
    ref_out = tmp_path / "reference.jsonl"
    run_to_end(cli("run", "--input", str(in_order), "--output", str(ref_out),
                   "--dead-letter", str(tmp_path / "ref.dead")))
    reference = sessions_by_id(file_records(ref_out))

    rec = tmp_path / "rec"
    run_to_end(cli("recovery", "init", str(rec), "--partitions", "2"))
    cmd = cli("run", "--kafka-brokers", brokers, "--hits-topic", t["hits"], "--sessions-topic",
              t["sessions"], "--dead-letter-topic", t["dead"], "--until-end",
              "--recovery-dir", str(rec), "--snapshot-interval", "1s", "--memory-budget", budget)
    rng = random.Random(os.getpid() + 1)
    kills = sum(run_killed(cmd, rec, rng.choice([1, 2])) for _ in range(3))
    assert kills >= 2, "the run finished before it could be killed: make the input larger"
    run_to_end(cmd)
    records = [m.value() for m in consume_all(brokers, t["sessions"], idle=3.0, timeout=300)]
    got = sessions_by_id(records)
    assert got == reference
    assert read_back(rec) == (budget != "0")
