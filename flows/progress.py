"""The progress line printed every few seconds and the summary line at the end.

Both `protosessions run` (`flows.cli`) and Bytewax's launcher
(`flows.sessions:flow`) print them, so they live below both.
"""

from __future__ import annotations

import signal
import sys
import threading
import time

from protosessions import stats


class Progress:
    """Prints counts to stderr every few seconds while a run goes on; on
    Kafka (`sessions_topic`) sessions count once the broker acknowledged them."""

    def __init__(self, sessions_topic: str | None = None, every: float = 5.0) -> None:
        self.every = every
        self.sessions_topic = sessions_topic
        self.start = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> "Progress":
        self.start = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _loop(self) -> None:
        while not self._stop.wait(self.every):
            print(progress_line(stats.totals(), time.monotonic() - self.start,
                                self.sessions_topic), file=sys.stderr, flush=True)


def progress_line(t: dict, seconds: float, sessions_topic: str | None = None) -> str:
    """The line printed every few seconds: what was read, what is open, what
    closed (on Kafka: sessions the broker acknowledged)."""
    sessions = _closed(t) if sessions_topic is None else t[stats.delivered(sessions_topic)]
    return (f"protosessions: {t['hits_read']} hits read, {t['open']} open proto-sessions, "
            f"{sessions} sessions, {t['dead_letters']} dead letters, {seconds:.0f}s")


def _closed(t: dict) -> int:
    return sum(v for k, v in t.items() if k.startswith("closed:"))


def summary_line(t: dict, seconds: float) -> str:
    """The counts of a finished run, sessions by close reason, and its rate."""
    reasons = ", ".join(f"{k[7:]} {v}" for k, v in sorted(t.items()) if k.startswith("closed:"))
    rate = t["hits_read"] / seconds if seconds > 0 else 0.0
    return (f"protosessions: {t['hits_read']} hits read, {_closed(t)} sessions"
            f" ({reasons or 'none'}), {t['dead_letters']} dead letters,"
            f" {t['duplicates']} duplicates, {seconds:.2f}s, {rate:.0f} hits/s")


def final_line(t: dict, seconds: float, stopped_by: int | None) -> str:
    """The summary line, saying which signal stopped the run if one did."""
    line = summary_line(t, seconds)
    return line if stopped_by is None else f"{line}; stopped by {signal.Signals(stopped_by).name}"
