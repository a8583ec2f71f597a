"""Every golden case through the real broker: hits produced to the hits topic,
the flow reading it to its end (`--until-end`), sessions and dead letters read
back from their topics."""

from __future__ import annotations

import subprocess
import sys

import orjson
import pytest

from golden_cases import CASES, assert_sessions, expected, flags, hits_path
from kafka_support import bootstrap, consume_all, produce, topics

pytestmark = pytest.mark.kafka


@pytest.mark.parametrize("case", CASES)
def test_golden_case_over_kafka(case: str) -> None:
    brokers = bootstrap()
    t = topics(brokers, 1, prefix=case[:2])
    lines = hits_path(case).read_bytes().split(b"\n")
    values, line_of_offset = [], {}
    for n, raw in enumerate(lines, 1):  # blank lines are not messages
        raw = raw.rstrip(b"\r")
        if raw.strip():
            line_of_offset[len(values)] = n
            values.append(raw)
    produce(brokers, t["hits"], values, partition=0)

    proc = subprocess.run(
        [sys.executable, "-m", "protosessions.cli", "run", "--kafka-brokers", brokers,
         "--hits-topic", t["hits"], "--sessions-topic", t["sessions"],
         "--dead-letter-topic", t["dead"], "--until-end", *flags(case)],
        capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr

    want = expected(case)
    sessions = consume_all(brokers, t["sessions"], expect=len(want["sessions"]), timeout=30)
    got = [orjson.loads(m.value()) for m in sessions]
    assert_sessions(case, got)
    for m, s in zip(sessions, got):
        assert m.key().decode() == s["authoritative_client_id"]  # SPEC: key = ACID
    assert len(consume_all(brokers, t["sessions"], idle=1.0)) == len(want["sessions"])

    dead = [orjson.loads(m.value()) for m in
            consume_all(brokers, t["dead"], expect=len(want["dead_letters"]), timeout=30)]
    have = sorted(({"line": line_of_offset[d["source"]["offset"]], "error": d["error"]}
                   for d in dead), key=lambda d: d["line"])
    assert have == want["dead_letters"]
    for d in dead:
        assert d["source"]["topic"] == t["hits"] and d["source"]["partition"] == 0
    assert f"{want['duplicates']} duplicates" in proc.stderr.strip().splitlines()[-1]
