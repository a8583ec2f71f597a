"""The live generator (flows/live_generate.py) without a broker: the file
generator's hits, keyed by client ID, timestamped when taken."""

from __future__ import annotations

import itertools

import orjson

from protosessions.generate import DEFAULT_START, generate_hits
from protosessions.timefmt import format_time_us

from flows.live_generate import LiveResult, live_hits

T = 1_735_732_800_000_000


def test_hits_are_the_generators_with_the_time_they_are_sent() -> None:
    ticks = itertools.count(T, 50_000)
    out = list(live_hits(rate=20, duration_s=10, clients=7, seed=4, now_us=lambda: next(ticks),
                         start=DEFAULT_START))
    assert len(out) == 200
    expected = [orjson.loads(line) for line in generate_hits(200, 7, 4)]
    for i, ((key, value), want) in enumerate(zip(out, expected)):
        hit = orjson.loads(value)
        assert hit["server_received_time"] == format_time_us(T + i * 50_000)
        assert key == hit["client_id"].encode()
        assert {k: v for k, v in hit.items() if k != "server_received_time"} == \
            {k: v for k, v in want.items() if k != "server_received_time"}


def test_without_duration_it_runs_on() -> None:
    out = list(itertools.islice(live_hits(rate=1, duration_s=None, clients=3, seed=1,
                                          now_us=lambda: T), 3700))
    assert len(out) == 3700  # past one round of 3600 hits


def test_summary_line() -> None:
    r = LiveResult("hits", produced=100, delivered=100, seconds=10.0)
    assert r.ok and r.summary() == "protosessions generate: 100 hits to topic hits in 10.0s, 10.0 hits/s"
    bad = LiveResult("hits", produced=100, delivered=98, errors=["Broker: timed out"], seconds=10.0)
    assert not bad.ok and "2 not delivered (Broker: timed out)" in bad.summary()
