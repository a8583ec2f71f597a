"""Prometheus metrics, served by Bytewax's API server (`/metrics` on
`BYTEWAX_DATAFLOW_API_PORT`, 3030 by default, when `BYTEWAX_DATAFLOW_API_ENABLED=true`).

Nothing is counted twice: the steps already keep per-worker counters for the
CLI summary (`protosessions.stats`); this collector reads them at scrape time,
so the hot path pays nothing for metrics.
"""

from __future__ import annotations

import threading
import weakref
from typing import Iterator

from prometheus_client.core import REGISTRY, CounterMetricFamily, GaugeMetricFamily

from protosessions import stats
from protosessions.clock import Clock
from protosessions.timefmt import wall_now_us

_clocks: "weakref.WeakSet[Clock]" = weakref.WeakSet()
_lock = threading.RLock()
_registered = False


def watch_clock(clock: Clock) -> None:
    """Report this worker clock's lag behind wall time."""
    with _lock:
        _clocks.add(clock)


class SessionsCollector:
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
            nows = [c.now for c in _clocks if c.now]
        lag = (wall_now_us() - min(nows)) / 1e6 if nows else 0.0
        yield GaugeMetricFamily("protosessions_clock_lag_seconds",
                                "Wall time minus the slowest worker clock", value=lag)


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
