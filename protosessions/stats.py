"""Counters shared by the steps of one process (for the CLI summary and metrics).

Each worker thread counts into its own `Counter`, so no lock is needed on the
hot path; `totals()` adds them up.
"""

from __future__ import annotations

import threading
from collections import Counter

_local = threading.local()
_all: list[Counter] = []
_lock = threading.Lock()


def counter() -> Counter:
    """This thread's counter."""
    c = getattr(_local, "counter", None)
    if c is None:
        c = _local.counter = Counter()
        with _lock:
            _all.append(c)
    return c


def totals() -> Counter:
    total: Counter = Counter()
    with _lock:
        for c in _all:
            total.update(dict(c))  # one C-level copy: a worker may be adding keys
    return total


def reset() -> None:
    with _lock:
        for c in _all:
            c.clear()


def delivered(topic: str) -> str:
    """The counter of messages the broker acknowledged on `topic` (Kafka
    sinks count only what was delivered, so progress never runs ahead of it)."""
    return "delivered:" + topic
