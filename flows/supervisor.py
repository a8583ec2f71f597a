"""Keeps a pod's Bytewax process in its cluster: re-forms it instead of crashing the pod.

A Bytewax 0.21.1 cluster does not survive losing a process: every other
process panics (`PanicException: Send thread panic`, a traceback) and exits.
In a pod that is a container restart, and the kubelet's back-off grows with
each one (10 s, 20 s, 40 s ...), so every rolling update or node drain cost
more outage than the last. And a process that is (re)connecting to a peer
whose pod came back with a new address keeps trying the old one for minutes
(a TCP connect to an address nobody answers).

So in a pod (`BYTEWAX_HOSTFILE_PATH` set) `python -m flows.launch` runs the
process as a child and watches it:
- the child failed because a peer went away: one line naming the peer, and a
  new child at once, which resumes from the last snapshot once the cluster
  has formed again (the pod's container never restarts);
- a peer's address changed (its pod was replaced) or it went away: the child
  is replaced at once instead of waiting on the old address;
- the child failed for any other reason (a setting refused with one line, a
  bug): its output is shown as it was and the pod exits with its code;
- SIGTERM / SIGINT: handed to the child, which stops cleanly
  (`flows.stop`), and the pod exits with its code.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import IO, Sequence

SUPERVISED = "PROTOSESSIONS_SUPERVISED"   # set in the child: run Bytewax, not another supervisor
WATCH_EVERY_S = 1.0                        # how often peers' addresses are looked up
GONE_WAIT_S = 3.0                          # after a failure, how long to look for the peer that went
# What a process prints when the cluster lost one of its processes.
PEER_LOST = re.compile(r"(Send|Recv) thread panic|Connection reset by peer|Broken pipe"
                       r"|connection (?:closed|lost)|UnexpectedEof", re.I)
TRACEBACK_START = re.compile(r"^Traceback \(most recent call last\)|^thread '.*' panicked at")


def peers(hostfile: str) -> list[str]:
    """The hosts of the hostfile, one per process, in process order."""
    with open(hostfile, encoding="utf-8") as f:
        return [line.strip().rsplit(":", 1)[0] for line in f if line.strip()]


def resolve(host: str) -> frozenset[str] | None:
    """The addresses `host` has now, None when it has none (its pod is gone)."""
    try:
        return frozenset(a[4][0] for a in socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP))
    except (socket.gaierror, UnicodeError, OSError):
        return None


def addresses(hosts: Sequence[str]) -> dict[str, frozenset[str] | None]:
    return {h: resolve(h) for h in hosts}


def _name(host: str) -> str:
    return host.split(".", 1)[0]


def _show(addrs: frozenset[str] | None) -> str:
    return ",".join(sorted(addrs)) if addrs else "none"


def changed(before: dict[str, frozenset[str] | None],
            now: dict[str, frozenset[str] | None]) -> list[str]:
    """One phrase per peer whose address is not what it was."""
    out = []
    for host, was in before.items():
        is_ = now.get(host)
        if is_ != was:
            out.append(f"{_name(host)} is gone (was {_show(was)})" if is_ is None
                       else f"{_name(host)} moved to {_show(is_)} (was {_show(was)})")
    return out


class _Relay(threading.Thread):
    """Copies the child's stderr to ours line by line, holding back a
    traceback or panic (which a lost peer causes) until the supervisor
    decides whether to show it."""

    def __init__(self, src: IO[bytes]) -> None:
        super().__init__(daemon=True)
        self.src = src
        self.held: list[bytes] = []

    def run(self) -> None:
        holding = False
        for line in iter(self.src.readline, b""):
            if not holding and TRACEBACK_START.search(line.decode("utf-8", "replace")):
                holding = True
            if holding:
                self.held.append(line)
            else:
                sys.stderr.buffer.write(line)
                sys.stderr.buffer.flush()

    def text(self) -> str:
        return b"".join(self.held).decode("utf-8", "replace")

    def show(self) -> None:
        sys.stderr.buffer.write(b"".join(self.held))
        sys.stderr.buffer.flush()


def say(line: str) -> None:
    print(f"protosessions: {line}", file=sys.stderr, flush=True)


class Supervisor:
    def __init__(self, argv: Sequence[str], hostfile: str) -> None:
        self.argv = list(argv)
        self.hostfile = hostfile
        self.stopping: int | None = None
        self.child: subprocess.Popen | None = None

    def _signal(self, signum: int, _frame) -> None:
        self.stopping = signum
        if self.child is not None and self.child.poll() is None:
            self.child.send_signal(signum)

    def _spawn(self) -> tuple[subprocess.Popen, _Relay]:
        env = {**os.environ, SUPERVISED: "1"}
        child = subprocess.Popen([sys.executable, "-m", "flows.launch", *self.argv], env=env,
                                 stderr=subprocess.PIPE)
        relay = _Relay(child.stderr)  # type: ignore[arg-type]
        relay.start()
        return child, relay

    def _wait_for_peers(self, hosts: Sequence[str]) -> dict[str, frozenset[str] | None] | None:
        """Every peer's addresses once all have one; None when asked to stop first."""
        told = False
        while self.stopping is None:
            addrs = addresses(hosts)
            missing = [_name(h) for h, a in addrs.items() if a is None]
            if not missing:
                return addrs
            if not told:
                say(f"waiting for {', '.join(missing)} to have an address")
                told = True
            time.sleep(0.5)
        return None

    def run(self) -> int:
        for s in (signal.SIGTERM, signal.SIGINT):
            signal.signal(s, self._signal)
        try:
            hosts = peers(self.hostfile)
        except OSError as e:
            say(f"cannot read the hostfile {self.hostfile}: {e.strerror}")
            return 2
        while True:
            before = self._wait_for_peers(hosts)
            if before is None:
                return 0
            self.child, relay = self._spawn()
            if self.stopping is not None:  # a signal between the check and the start
                self.child.send_signal(self.stopping)
            moved: list[str] = []
            next_look = time.monotonic() + WATCH_EVERY_S
            while self.child.poll() is None:
                time.sleep(0.1)
                if self.stopping is None and time.monotonic() >= next_look:
                    next_look = time.monotonic() + WATCH_EVERY_S
                    moved = changed(before, addresses(hosts))
                    if moved:
                        self.child.kill()
            rc = self.child.wait()
            relay.join(5)
            if rc == 0:
                return 0
            if self.stopping is not None:  # its peers stopping too (a scale to 0) is no failure
                if PEER_LOST.search(relay.text()):
                    say("stopped (its peers stopped at the same time)")
                    return 0
                relay.show()
                return rc
            if moved:
                say(f"peer {'; '.join(moved)}: re-forming the cluster from the last snapshot")
                continue
            if not PEER_LOST.search(relay.text()):
                relay.show()  # not a lost peer: as it was, and the pod restarts
                return rc
            deadline = time.monotonic() + GONE_WAIT_S
            while not moved and time.monotonic() < deadline and self.stopping is None:
                time.sleep(0.25)
                moved = changed(before, addresses(hosts))
            who = "; ".join(moved) if moved else "the connection to a peer broke"
            say(f"lost a peer ({who}): re-forming the cluster from the last snapshot")


def main(argv: Sequence[str], hostfile: str) -> int:
    return Supervisor(argv, hostfile).run()
