"""SIGINT and SIGTERM stop a run cleanly: reading stops, what was produced
is written, the summary line is printed, and the exit code is 130 (SIGINT)
or 0 (SIGTERM, how Kubernetes stops a pod), well within a pod's grace period."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson
import pytest

from flows import stop
from protosessions.generate import write_hits

ROOT = Path(__file__).resolve().parent.parent
HITS = 300_000  # ~10 s of work or more: still reading when the signal comes
GRACE_S = 20.0  # Kubernetes gives 30 s by default; a stop must take well under that
ENV = {**os.environ, "BYTEWAX_DATAFLOW_API_CACHE_PATH": tempfile.gettempdir()}


@pytest.fixture(scope="module")
def big_input(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("stop") / "hits.jsonl"
    with open(path, "wb") as f:
        write_hits(f, HITS, 20_000, 7)
    return path


def _wait_reading(proc: subprocess.Popen, out: Path, timeout: float = 60.0) -> None:
    """Until the run has written its first sessions (it is reading): to the
    output itself, or to the temp file beside it that replaces it at the end."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the run ended before the signal"
        if any(p.stat().st_size > 0 for p in out.parent.glob(f"*{out.name}*")):
            return
        time.sleep(0.1)
    raise AssertionError("the run wrote nothing in time")


def _stopped(proc: subprocess.Popen, sig: int) -> tuple[int, str, float]:
    start = time.monotonic()
    proc.send_signal(sig)
    try:
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    return proc.returncode, err.decode(), time.monotonic() - start


def _hits_read(summary: str) -> int:
    return int(summary.split("protosessions: ", 1)[1].split(" hits read", 1)[0])


@pytest.mark.parametrize("sig,code", [(signal.SIGINT, 130), (signal.SIGTERM, 0)])
def test_signal_stops_a_file_run_cleanly(big_input: Path, tmp_path: Path, sig: int,
                                         code: int) -> None:
    out = tmp_path / "sessions.jsonl"
    proc = subprocess.Popen([sys.executable, "-m", "flows.cli", "run", "--input",
                             str(big_input), "--output", str(out), "--dead-letter",
                             str(tmp_path / "dead.jsonl")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=ENV)
    _wait_reading(proc, out)
    rc, err, took = _stopped(proc, sig)
    assert rc == code, err[-3000:]
    assert took < GRACE_S, f"stopping took {took:.1f}s"
    assert "panicked" not in err and "Traceback" not in err, err[-3000:]
    summary = err.strip().splitlines()[-1]
    assert summary.endswith(f"stopped by {signal.Signals(sig).name}"), err[-3000:]
    assert 0 < _hits_read(summary) < HITS  # it stopped reading
    for line in out.read_bytes().splitlines():  # what was produced is whole
        assert orjson.loads(line)["session_id"]


def test_sigterm_stops_a_run_on_a_quiet_stdin_pipe(tmp_path: Path) -> None:
    """A pipe that stays open without data must not hide the stop."""
    proc = subprocess.Popen([sys.executable, "-m", "flows.cli", "run", "--input", "-"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=ENV)
    try:
        assert proc.stdin is not None
        write_hits(proc.stdin, 50, 5, 1)
        proc.stdin.flush()
        time.sleep(4)  # started, read the 50 hits, now waits on the pipe
        start = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err.decode()[-3000:]
    assert time.monotonic() - start < GRACE_S
    assert _hits_read(err.decode().strip().splitlines()[-1]) == 50


def test_sigterm_stops_the_bytewax_launcher_cleanly(big_input: Path, tmp_path: Path) -> None:
    """`python -m bytewax.run flows.sessions:flow` (the pod's command) too."""
    out = tmp_path / "sessions.jsonl"
    env = {**ENV, "PROTOSESSIONS_INPUT": str(big_input), "PROTOSESSIONS_OUTPUT": str(out),
           "PROTOSESSIONS_DEAD_LETTER": str(tmp_path / "dead.jsonl")}
    proc = subprocess.Popen([sys.executable, "-m", "bytewax.run", "flows.sessions:flow"],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    _wait_reading(proc, out)
    rc, err, took = _stopped(proc, signal.SIGTERM)
    assert rc == 0, err[-3000:]
    assert took < GRACE_S
    assert "panicked" not in err, err[-3000:]


def test_flag_and_handlers_reset() -> None:
    stop.reset()  # whatever an earlier run in this process left installed
    before = signal.getsignal(signal.SIGTERM)
    stop.install()
    try:
        assert not stop.requested() and stop.signal_number() is None
        os.kill(os.getpid(), signal.SIGTERM)  # handled between bytecodes: no exit
        time.sleep(0.01)
        assert stop.requested() and stop.signal_number() == signal.SIGTERM
    finally:
        stop.reset()
    assert not stop.requested()
    assert signal.getsignal(signal.SIGTERM) is before


HUNG_RUN = """
import os, signal, sys, time
from flows import stop
stop.HARD_STOP_AFTER_S = float(sys.argv[1])
stop.install()
for _ in range(int(sys.argv[2])):
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(0.2)
time.sleep(60)  # a run whose stop hangs
"""


@pytest.mark.parametrize("deadline_s,signals", [(1.0, 1), (60.0, 2)])
def test_a_stop_that_hangs_exits_hard_in_bounded_time(deadline_s: float, signals: int) -> None:
    """After `HARD_STOP_AFTER_S`, or at a second signal, the process exits
    (128 + signal) instead of waiting for the kubelet's SIGKILL."""
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", HUNG_RUN, str(deadline_s), str(signals)],
                          cwd=ROOT, capture_output=True, timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, proc.stderr.decode()
    assert time.monotonic() - start < 15
