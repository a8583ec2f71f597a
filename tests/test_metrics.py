"""`protosessions_clock_lag_seconds` (flows/metrics.py): how far the clock is
behind the newest hit time read, not how long the stream has been quiet."""

from __future__ import annotations

from protosessions.clock import Clock, WallFollowingClock

from flows import metrics
from flows.sources import ListSource
from flows.steps import SessionLogic, make_clock
from protosessions.config import Settings

T = 1_735_732_800_000_000  # 2025-01-01T12:00:00Z in microseconds
S = 1_000_000


def lag(read: list[Clock], handled: list[Clock]) -> float:
    """The gauge's value as a scrape would read it."""
    collector = metrics.SessionsCollector(read=read, handled=handled)
    (family,) = [f for f in collector.collect() if f.name == "protosessions_clock_lag_seconds"]
    return family.samples[0].value


def test_quiet_stream_is_not_behind() -> None:
    # The last hit read was at T; 35 s of wall time pass with nothing arriving:
    # the session clock follows wall time, and the gauge stays 0.
    handled = WallFollowingClock(now=T, wall=T, idle_us=S)
    handled.follow(T + 35 * S)
    assert handled.now == T + 35 * S
    assert lag([Clock(T)], [handled]) == 0.0


def test_hits_read_but_not_handled_are_lag() -> None:
    assert lag([Clock(T + 20 * S)], [Clock(T)]) == 20.0


def test_newest_read_against_slowest_worker() -> None:
    read = [Clock(T + 5 * S), Clock(T + 9 * S)]
    handled = [Clock(T + 8 * S), Clock(T + 2 * S), Clock(0)]  # 0: a worker that saw no hit yet
    assert lag(read, handled) == 7.0


def test_nothing_read_yet_is_zero() -> None:
    assert lag([], []) == 0.0
    assert lag([Clock(0)], [Clock(T)]) == 0.0


def test_reader_and_session_clocks_are_watched_by_role() -> None:
    settings = Settings()
    part = ListSource([[]], settings).build_part("input", "0", None)
    logic = SessionLogic(settings, make_clock(True, False, S), None, finite=False)
    assert part.read_clock in metrics._read and part.read_clock not in metrics._handled
    assert logic.clock in metrics._handled and logic.clock not in metrics._read
