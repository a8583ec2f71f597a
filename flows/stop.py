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
signal exits at once (for a stop that hangs).
"""

from __future__ import annotations

import os
import signal
from types import FrameType
from typing import Any

SIGNALS = (signal.SIGINT, signal.SIGTERM)

_received: int | None = None
_previous: dict[int, Any] = {}


def _handle(signum: int, _frame: FrameType | None) -> None:
    global _received
    if _received is not None:  # asked twice: the user (or the kubelet) means it
        os.write(2, f"protosessions: {signal.Signals(signum).name} again: exiting without "
                    "delivering what is in flight\n".encode())
        os._exit(128 + signum)
    _received = signum


def install() -> None:
    """Handle SIGINT and SIGTERM by asking the run to stop (a fresh run: the
    flag is cleared). Must be called from the main thread."""
    global _received
    _received = None
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
    global _received
    _received = None
    for s, previous in _previous.items():
        signal.signal(s, previous)
    _previous.clear()
