"""Counters shared by the steps of one process (for the CLI summary and metrics).

Each worker thread counts into its own `Counter`, so no lock is needed on the
hot path; `totals()` adds them up.
"""

from __future__ import annotations

from collections import Counter

from .perthread import PerThread

_counters: PerThread[Counter] = PerThread(Counter)


def counter() -> Counter:
    """This thread's counter."""
    return _counters.get()


def totals() -> Counter:
    total: Counter = Counter()
    for c in _counters.values():
        total.update(dict(c))  # one C-level copy: a worker may be adding keys
    return total


def reset() -> None:
    for c in _counters.values():
        c.clear()


def delivered(topic: str) -> str:
    """The counter of messages the broker acknowledged on `topic` (Kafka
    sinks count only what was delivered, so progress never runs ahead of it)."""
    return "delivered:" + topic
