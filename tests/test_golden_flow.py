"""Every golden case through the dataflow on Bytewax `TestingSource` inputs,
and through the in-process `Engine` the flow is built from."""

from __future__ import annotations

import orjson
import pytest
from bytewax.testing import TestingSink, cluster_main, run_main

from flows.sessions import build_flow
from flows.sources import ListSource
from golden_cases import (CASES, assert_dead_letters, assert_sessions, expected, hits_path,
                          partitioned, run_config)
from protosessions import stats
from protosessions.engine import Engine
from protosessions.merge import merged


def run_case(case: str, workers: int = 1, *extra: str, batch_size: int = 7, spread: int = 0):
    sessions: list = []
    dead: list = []
    config = run_config(case, *extra)
    flow = build_flow(config, source=ListSource(partitioned(case, spread), config.settings,
                                                batch_size),
                      sessions_sink=TestingSink(sessions), dead_sink=TestingSink(dead))
    stats.reset()
    if workers == 1:
        run_main(flow)
    else:
        cluster_main(flow, [], 0, worker_count_per_proc=workers)
    return ([orjson.loads(v) for _, v in sessions], [orjson.loads(v) for _, v in dead],
            stats.totals())


@pytest.mark.parametrize("case", CASES)
def test_golden_flow_one_worker(case: str) -> None:
    sessions, dead, totals = run_case(case)
    assert_sessions(case, sessions)
    assert_dead_letters(case, dead)
    assert totals["duplicates"] == expected(case)["duplicates"]


@pytest.mark.parametrize("case", CASES)
def test_golden_flow_three_workers(case: str) -> None:
    sessions, dead, totals = run_case(case, 3)
    assert_sessions(case, sessions)
    assert_dead_letters(case, dead)
    assert totals["duplicates"] == expected(case)["duplicates"]


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("batch_size", [1, 2000])
def test_golden_flow_batch_sizes(case: str, batch_size: int) -> None:
    """Any batch size gives the same sessions (SPEC: read pace never matters)."""
    sessions, _, _ = run_case(case, 2, batch_size=batch_size)
    assert_sessions(case, sessions)


@pytest.mark.parametrize("case", ["10_max_events_keeps_every_hit", "14_late_hit_after_close",
                                  "17_mixed_2000"])
@pytest.mark.parametrize("extra", [["--tick-interval", "0s"], ["--tick-interval", "17s"],
                                   ["--compaction-threshold", "1"], ["--shards", "1"],
                                   ["--shards", "997"], ["--identity-shards", "1"],
                                   ["--identity-shards", "7"], ["--max-held-hits", "5"]])
def test_golden_invariant_under_tick_compaction_shards(case: str, extra: list[str]) -> None:
    """SPEC: identical input gives identical sessions whatever the tick
    interval or compaction threshold (and, here, the shard counts and the
    memory bound of the merge)."""
    sessions, _, _ = run_case(case, 1, *extra, batch_size=3)
    assert_sessions(case, sessions)


@pytest.mark.parametrize("case", CASES)
def test_golden_engine(case: str) -> None:
    """The in-process Engine reads one partition: a case on several is given
    the time merge of its partitions (their valid hits, head by head)."""
    settings = run_config(case).settings
    engine = Engine(settings)
    parts = partitioned(case)
    if len(parts) == 1:
        lines = hits_path(case).read_bytes().split(b"\n")
    else:
        lines = merged([[raw for _, raw in p] for p in parts], settings)
        assert not expected(case)["dead_letters"]  # dead letters take no part in the merge
    out = engine.run(lines, str(hits_path(case)))
    assert_sessions(case, [orjson.loads(b) for _, b in out])
    assert engine.sessions.stats["duplicates"] == expected(case)["duplicates"]
    if len(parts) == 1:
        assert [{"line": d.source["line"], "error": d.reason} for d in engine.dead_letters] \
            == expected(case)["dead_letters"]
