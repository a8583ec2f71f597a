"""The d8a fixture through the dataflow: `protosessions run --input` of the
hits d8a's receiver published, with 1 and 3 workers and as two processes,
and in-process over shard counts and batch sizes: d8a's own 26 sessions
each time, their hits in the d8a form with `AuthoritativeClientID` set."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import orjson
import pytest
from bytewax.testing import TestingSink, cluster_main, run_main
from hypothesis import given, strategies as st

from d8a_support import D8A_FLAGS, HITS, d8a_sessions, grouping
from flows.cli import _run_values, build_parser
from flows.options import RunConfig
from flows.sessions import build_flow
from flows.sources import ListSource
from protosessions import stats
from test_fast_path import MANY, _join
from test_properties import S, cases

ROOT = Path(__file__).resolve().parents[1]


def check_sessions(lines: list[bytes]) -> None:
    sessions = [orjson.loads(x) for x in lines if x.strip()]
    assert grouping(sessions) == d8a_sessions() and len(sessions) == 26
    for s in sessions:
        for h in s["hits"]:
            assert h["AuthoritativeClientID"] == s["authoritative_client_id"]
            assert "authoritative_client_id" not in h and "Request" in h


@pytest.mark.parametrize("workers", [1, 3])
def test_fixture_through_the_cli(workers: int, tmp_path: Path) -> None:
    out, dead = tmp_path / "sessions.jsonl", tmp_path / "dead.jsonl"
    proc = subprocess.run([sys.executable, "-m", "flows.cli", "run", "--input", str(HITS),
                           "--output", str(out), "--dead-letter", str(dead),
                           "--workers", str(workers), *D8A_FLAGS],
                          capture_output=True, text=True, timeout=180, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    check_sessions(out.read_bytes().splitlines())
    assert dead.read_bytes() == b""
    assert "534 hits read, 26 sessions" in proc.stderr.strip().splitlines()[-1]


def test_fixture_as_two_processes(tmp_path: Path) -> None:
    """`python -m bytewax.run flows.sessions:flow`, as the pods run it, the
    settings as `PROTOSESSIONS_*` variables."""
    out = tmp_path / "sessions.jsonl"
    env = {**os.environ, "PROTOSESSIONS_INPUT": str(HITS), "PROTOSESSIONS_OUTPUT": str(out),
           "PROTOSESSIONS_DEAD_LETTER": "/dev/null", "PROTOSESSIONS_INPUT_FORMAT": "d8a",
           "PROTOSESSIONS_IDENTITY_RULES": "d8a", "PROTOSESSIONS_SESSION_DURATION": "2s",
           "BYTEWAX_DATAFLOW_API_CACHE_PATH": str(tmp_path)}
    addrs = "127.0.0.1:28391;127.0.0.1:28392"
    procs = [subprocess.Popen([sys.executable, "-m", "bytewax.run", "flows.sessions:flow",
                               "-w", "1", "-i", str(i), "-a", addrs], env=env, cwd=ROOT,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
             for i in range(2)]
    for p in procs:
        _, err = p.communicate(timeout=180)
        assert p.returncode == 0, err.decode()[-3000:]
    check_sessions(out.read_bytes().splitlines())


def _in_process(workers: int, batch: int, *extra: str) -> list[bytes]:
    args = build_parser().parse_args(["run", *D8A_FLAGS, *extra])
    config = RunConfig.from_values(_run_values(args))
    items = [((str(HITS), n), raw) for n, raw in enumerate(HITS.read_bytes().splitlines(), 1)]
    sessions: list = []
    flow = build_flow(config, source=ListSource([items], config.settings, batch),
                      sessions_sink=TestingSink(sessions), dead_sink=TestingSink([]))
    stats.reset()
    if workers == 1:
        run_main(flow)
    else:
        cluster_main(flow, [], 0, worker_count_per_proc=workers)
    return [v for _, v in sessions]


@pytest.mark.parametrize("extra", [[], ["--identity-shards", "1"], ["--identity-shards", "7"],
                                   ["--shards", "1"], ["--shards", "997"],
                                   ["--compaction-threshold", "1"], ["--tick-interval", "0s"]])
def test_fixture_over_shard_counts(extra: list[str]) -> None:
    check_sessions(_in_process(2, 50, *extra))


def test_fixture_one_hit_a_batch() -> None:
    check_sessions(_in_process(1, 1))


@MANY
@given(cases(allow_bad=True), st.sampled_from([1, 3, 50]), st.sampled_from([0, 1, 5 * S]))
def test_d8a_identity_batch_loop_equals_the_chain(case, batch: int, tick: int) -> None:
    """`D8aIdentityJoin.join_batch` (the identity step's fast path) claims and
    rewrites exactly as its `handle` does through the chain."""
    s, lines, _ = case
    s = replace(s, tick_interval_us=tick, eviction_strategy="rewrite", identity_rules="d8a")
    assert _join(s, lines, batch, True) == _join(s, lines, batch, False)
