"""Every golden case through the real broker: hits produced to the partitions
of the hits topic that `partitions.json` names (one partition without it), the
flow reading the topic to its end (`--until-end`), sessions and dead letters
read back from their topics. And each case spread over three partitions: the
sessions of one file holding the partitions' time merge (SPEC rule 2)."""

from __future__ import annotations

import subprocess
import sys

import orjson
import pytest

from golden_cases import CASES, assert_sessions, expected, flags, partitioned, run_config
from kafka_support import bootstrap, consume_all, produce, topics
from protosessions.engine import Engine
from protosessions.merge import merged

pytestmark = pytest.mark.kafka


def run_over_kafka(case: str, parts: list[list[tuple]]) -> tuple[list, list, str, dict]:
    """Produce each partition's lines to its partition, run `--until-end`;
    sessions, dead letters, stderr, and the line of each (partition, offset)."""
    brokers = bootstrap()
    t = topics(brokers, len(parts), prefix=case[:2])
    line_of: dict[tuple[int, int], int] = {}
    for p, items in enumerate(parts):
        for offset, ((_, line), _) in enumerate(items):
            line_of[(p, offset)] = line
        if items:
            produce(brokers, t["hits"], [raw for _, raw in items], partition=p)
    proc = subprocess.run(
        [sys.executable, "-m", "flows.cli", "run", "--kafka-brokers", brokers,
         "--hits-topic", t["hits"], "--sessions-topic", t["sessions"],
         "--dead-letter-topic", t["dead"], "--until-end", *flags(case)],
        capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    sessions = consume_all(brokers, t["sessions"], idle=1.5)
    for m in sessions:  # SPEC: key = ACID
        assert m.key().decode() == orjson.loads(m.value())["authoritative_client_id"]
    dead = [orjson.loads(m.value()) for m in consume_all(brokers, t["dead"], idle=1.0)]
    for d in dead:
        assert d["source"]["topic"] == t["hits"]
    return [orjson.loads(m.value()) for m in sessions], dead, proc.stderr, line_of


@pytest.mark.parametrize("case", CASES)
def test_golden_case_over_kafka(case: str) -> None:
    got, dead, stderr, line_of = run_over_kafka(case, partitioned(case))
    want = expected(case)
    assert_sessions(case, got)
    have = sorted(({"line": line_of[(d["source"]["partition"], d["source"]["offset"])],
                    "error": d["error"]} for d in dead), key=lambda d: d["line"])
    assert have == want["dead_letters"]
    assert f"{want['duplicates']} duplicates" in stderr.strip().splitlines()[-1]


@pytest.mark.parametrize("case", CASES)
def test_golden_case_spread_over_three_partitions(case: str) -> None:
    parts = partitioned(case, spread=3)
    got, _, _, _ = run_over_kafka(case, parts)
    settings = run_config(case).settings
    want = Engine(settings).run(merged([[raw for _, raw in p] for p in parts], settings))
    by_id = lambda s: s["session_id"]  # noqa: E731
    assert sorted(got, key=by_id) == sorted((orjson.loads(b) for _, b in want), key=by_id)
