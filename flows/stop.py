"""A clean stop on SIGINT (Ctrl-C) and SIGTERM (how Kubernetes stops a pod).

Bytewax 0.21.1 runs Python's signal handlers from its run loop (`run_main`
calls `Python::check_signals` in the worker loop; `cluster_main`'s main
thread does every millisecond) and panics the worker as soon as a handler
raises, which with Python's default SIGINT handler (`KeyboardInterrupt`) is
the ~60-line Rust backtrace and exit code 1; SIGTERM's default kills the
process (143) before anything is delivered. So the handlers installed here
only set a flag: the sources see `requested()` and end their partitions,
the session step closes nothing at that end of input, the sinks deliver
what was produced, the run returns, and the caller prints its summary and
exits (`protosessions run`: 130 after SIGINT, 0 after SIGTERM). A second
signal exits at once, and so does a stop that has not finished within
`HARD_STOP_AFTER_S` (a flush waiting on a broker that is down, a process of
a cluster whose peers were not stopped): the pod's grace period (30 s by
default) must end in our exit, not the kubelet's SIGKILL. Exiting hard loses
nothing that recovery does not replay.
"""

from __future__ import annotations

import os
import signal
import threading
from types import FrameType
from typing import Any

SIGNALS = (signal.SIGINT, signal.SIGTERM)
HARD_STOP_AFTER_S = 20.0

_received: int | None = None
_previous: dict[int, Any] = {}
_deadline: threading.Timer | None = None


def _exit_hard(signum: int, why: str) -> None:
    os.write(2, f"protosessions: {signal.Signals(signum).name} {why}: exiting without "
                "delivering what is in flight\n".encode())
    os._exit(128 + signum)


def _handle(signum: int, _frame: FrameType | None) -> None:
    global _received, _deadline
    if _received is not None:  # asked twice: the user (or the kubelet) means it
        _exit_hard(signum, "again")
    _received = signum
    _deadline = threading.Timer(HARD_STOP_AFTER_S, _exit_hard,
                                (signum, f"and no stop after {HARD_STOP_AFTER_S:g}s"))
    _deadline.daemon = True
    _deadline.start()


def _forget() -> None:
    global _received, _deadline
    _received = None
    if _deadline is not None:
        _deadline.cancel()
        _deadline = None


def install() -> None:
    """Handle SIGINT and SIGTERM by asking the run to stop (a fresh run: the
    flag is cleared). Must be called from the main thread."""
    _forget()
    for s in SIGNALS:
        if signal.getsignal(s) is signal.SIG_IGN:  # e.g. SIGINT of a `cmd &` job: keep ignoring
            continue
        previous = signal.signal(s, _handle)
        _previous.setdefault(s, previous)


def requested() -> bool:
    """True once a stop signal arrived: sources end their partitions."""
    return _received is not None


def signal_number() -> int | None:
    """The signal that asked for the stop, if any."""
    return _received


def reset() -> None:
    """Forget a stop request and put back the handlers `install` replaced
    (for tests, and for runs made one after another in one process)."""
    _forget()
    for s, previous in _previous.items():
        signal.signal(s, previous)
    _previous.clear()
