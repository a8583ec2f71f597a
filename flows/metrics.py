"""Prometheus metrics, served by Bytewax's API server (`/metrics` on
`BYTEWAX_DATAFLOW_API_PORT`, 3030 by default, when `BYTEWAX_DATAFLOW_API_ENABLED=true`).

Nothing is counted twice: the steps already keep per-worker counters for the
CLI summary (`protosessions.stats`); this collector reads them at scrape time,
so the hot path pays nothing for metrics.
"""

from __future__ import annotations

import threading
import weakref
from typing import Iterable, Iterator, Optional

from prometheus_client.core import REGISTRY, CounterMetricFamily, GaugeMetricFamily

from protosessions import stats
from protosessions.clock import Clock

_read: "weakref.WeakSet[Clock]" = weakref.WeakSet()  # greatest hit time read, per worker
_handled: "weakref.WeakSet[Clock]" = weakref.WeakSet()  # the session clocks (SPEC rule 2)
_lock = threading.RLock()
_registered = False


def watch_clock(clock: Clock, role: str = "handled") -> None:
    """Report a worker clock: `"read"` (the greatest hit time read) or
    `"handled"` (the clock of the session step)."""
    with _lock:
        (_read if role == "read" else _handled).add(clock)


def clock_lag_seconds(read: Iterable[int], handled: Iterable[int]) -> float:
    """How far the clock is behind the newest hit time read: the newest time
    read minus the slowest session clock, never below 0. A quiet stream is
    not behind (its clock follows wall time past the last hit), so the lag
    stays 0 however long nothing arrives; hits read but not yet handled (a
    partition holding the merge back, a slow step) make it grow."""
    newest = max((t for t in read if t), default=0)
    slowest = min((t for t in handled if t), default=0)
    if not newest or not slowest:
        return 0.0
    return max(0, newest - slowest) / 1e6


class SessionsCollector:
    def __init__(self, read: Optional[Iterable[Clock]] = None,
                 handled: Optional[Iterable[Clock]] = None) -> None:
        self._read = _read if read is None else read
        self._handled = _handled if handled is None else handled

    def collect(self) -> Iterator:
        t = stats.totals()
        yield _counter("protosessions_hits_in", "Hits read from the input", t["hits_read"])
        yield _by_reason("protosessions_dead_letters", "Rejected hits by reason", "dead:", t)
        yield _by_reason("protosessions_sessions_closed", "Sessions closed by reason", "closed:", t)
        yield _counter("protosessions_duplicates", "Hits dropped as duplicates", t["duplicates"])
        yield _counter("protosessions_evictions", "Clients moved into an owner (strategy evict)",
                       t["evictions"])
        yield _counter("protosessions_compactions", "Proto-session compactions", t["compactions"])
        yield GaugeMetricFamily("protosessions_open_proto_sessions", "Open proto-sessions",
                                value=t["open"])
        with _lock:
            read = [c.now for c in self._read]
            handled = [c.now for c in self._handled]
        yield GaugeMetricFamily("protosessions_clock_lag_seconds",
                                "How far the clock is behind the newest hit time read "
                                "(0 on a quiet stream)", value=clock_lag_seconds(read, handled))


def _by_reason(name: str, doc: str, prefix: str, totals: dict) -> CounterMetricFamily:
    """A counter labelled by reason, from the `<prefix><reason>` counts."""
    family = CounterMetricFamily(name, doc, labels=["reason"])
    for key, value in sorted(totals.items()):
        if key.startswith(prefix):
            family.add_metric([key[len(prefix):]], value)
    return family


def _counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, value=value)


def register() -> None:
    """Add the collector to the default registry once per process."""
    global _registered
    with _lock:
        if not _registered:
            REGISTRY.register(SessionsCollector())
            _registered = True
