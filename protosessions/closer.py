"""Closers receive closed proto-sessions (the `Closer` protocol of the Go engine)."""

from __future__ import annotations

import sys
from typing import IO, Protocol

from .session import session_json
from .state import ProtoSession, StoredHit


class Closer(Protocol):
    def close(self, ps: ProtoSession, hits: list[StoredHit], reason: str) -> None: ...

    def requeue(self, acid: str, hits: list[bytes]) -> None:
        """Hits of an evicted proto-session, to go back through the input."""
        ...


class Requeue:
    """A hit to produce to the hits topic again (strategy `evict`)."""

    __slots__ = ("key", "value")

    def __init__(self, key: str, value: bytes) -> None:
        self.key = key
        self.value = value

    def __reduce__(self):
        return (Requeue, (self.key, self.value))


class CollectingCloser:
    """Keeps `(acid, session JSON bytes)` until the caller takes them;
    `session_hits` is `--session-hits` (`full`, `ids`, `none`)."""

    def __init__(self, session_hits: str = "full") -> None:
        self.out: list = []
        self.session_hits = session_hits

    def close(self, ps: ProtoSession, hits: list[StoredHit], reason: str) -> None:
        self.out.append((ps.acid, session_json(ps, hits, reason, self.session_hits)))

    def requeue(self, acid: str, hits: list[bytes]) -> None:
        self.out.extend(Requeue(acid, raw) for raw in hits)

    def take(self) -> list:
        """Closed sessions as `(ACID, JSON)` and evicted hits as `Requeue`s."""
        out, self.out = self.out, []
        return out


class PrintingCloser:
    """Writes each closed session as one JSON line (for tests and debugging)."""

    def __init__(self, stream: IO[str] | None = None, session_hits: str = "full") -> None:
        self.stream = stream or sys.stdout
        self.session_hits = session_hits

    def close(self, ps: ProtoSession, hits: list[StoredHit], reason: str) -> None:
        self.stream.write(session_json(ps, hits, reason, self.session_hits).decode() + "\n")

    def requeue(self, acid: str, hits: list[bytes]) -> None:
        for raw in hits:
            self.stream.write(f"requeue {acid}: {raw.decode()}\n")
