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
`HARD_STOP_AFTER_S` (a flush waiting on a broker that is down): the pod's
grace period (30 s by default) must end in our exit, not the kubelet's
SIGKILL. Exiting hard loses nothing that recovery does not replay.

One process of a cluster (a pod) never sees its run end while its peers
run on, so there (`install(cluster=True)`) the stop ends otherwise: once
the sinks have written nothing for `QUIET_S` after the sources ended (every
batch a sink writes is flushed and acknowledged before it returns, so what
was produced is then delivered), the process exits 0; its peers re-form the
cluster without it (`flows.supervisor`) and resume from the last snapshot.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from types import FrameType
from typing import Any

SIGNALS = (signal.SIGINT, signal.SIGTERM)
HARD_STOP_AFTER_S = 20.0
QUIET_S = 1.0

_received: int | None = None
_cluster = False
_lock = threading.Lock()
_writing = 0                         # sink batches being written now
_last_write = 0.0                    # monotonic time the last one ended

_previous: dict[int, Any] = {}
_deadline: threading.Timer | None = None


def _exit_hard(signum: int, why: str) -> None:
    os.write(2, f"protosessions: {signal.Signals(signum).name} {why}: exiting without "
                "delivering what is in flight\n".encode())
    os._exit(128 + signum)


class writing:
    """Marks a sink batch being written (the cluster stop waits for none)."""

    def __enter__(self) -> None:
        global _writing
        with _lock:
            _writing += 1

    def __exit__(self, *_exc: object) -> None:
        global _writing, _last_write
        with _lock:
            _writing -= 1
            _last_write = time.monotonic()


def _quiet_exit(signum: int, since: float) -> None:
    """Exit 0 once no sink has written for QUIET_S (cluster mode), hard at the deadline."""
    while time.monotonic() - since < HARD_STOP_AFTER_S:
        time.sleep(0.1)
        now = time.monotonic()
        with _lock:
            quiet = _writing == 0 and now - max(_last_write, since) >= QUIET_S
        if quiet:
            os.write(2, f"protosessions: {signal.Signals(signum).name}: stopped after delivering "
                        f"what was produced ({now - since:.1f}s); the cluster resumes from the "
                        "last snapshot\n".encode())
            os._exit(0)
    _exit_hard(signum, f"and no stop after {HARD_STOP_AFTER_S:g}s")


def _handle(signum: int, _frame: FrameType | None) -> None:
    global _received, _deadline
    if _received is not None:  # asked twice: the user (or the kubelet) means it
        _exit_hard(signum, "again")
    _received = signum
    if _cluster:
        threading.Thread(target=_quiet_exit, args=(signum, time.monotonic()), daemon=True).start()
        return
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


def install(cluster: bool = False) -> None:
    """Handle SIGINT and SIGTERM by asking the run to stop (a fresh run: the
    flag is cleared); `cluster`: this is one process of several, which
    exits once what it produced is delivered. Must be called from the main
    thread."""
    global _cluster
    _forget()
    _cluster = cluster
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
    global _cluster
    _forget()
    _cluster = False
    for s, previous in _previous.items():
        signal.signal(s, previous)
    _previous.clear()
