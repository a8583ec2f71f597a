"""Closers receive closed proto-sessions (the `Closer` protocol of the Go engine)."""

from __future__ import annotations

import sys
from typing import IO, Protocol

from .session import session_json
from .state import ProtoSession, StoredHit


class Closer(Protocol):
    def close(self, ps: ProtoSession, hits: list[StoredHit], reason: str) -> None: ...


class CollectingCloser:
    """Keeps `(acid, session JSON bytes)` until the caller takes them."""

    def __init__(self) -> None:
        self.out: list[tuple[str, bytes]] = []

    def close(self, ps: ProtoSession, hits: list[StoredHit], reason: str) -> None:
        self.out.append((ps.acid, session_json(ps, hits, reason)))

    def take(self) -> list[tuple[str, bytes]]:
        out, self.out = self.out, []
        return out


class PrintingCloser:
    """Writes each closed session as one JSON line (for tests and debugging)."""

    def __init__(self, stream: IO[str] | None = None) -> None:
        self.stream = stream or sys.stdout

    def close(self, ps: ProtoSession, hits: list[StoredHit], reason: str) -> None:
        self.stream.write(session_json(ps, hits, reason).decode() + "\n")
