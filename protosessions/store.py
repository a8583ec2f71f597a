"""The store a session shard writes its open proto-sessions to, as changes.

A snapshot of a shard used to carry every open proto-session, so each one
rewrote the whole open state. With a store, a snapshot writes only what
changed since the last one (the new hits of a proto-session, compressed
once, its new metadata, and the proto-sessions that closed) as one numbered
*position*, and the snapshot itself keeps only a `Marker` of that position.
Resuming a snapshot rolls the store back to exactly its position: rows of
later positions (snapshots that were written but never became resumable)
are discarded, and their numbers are never used again (a stale marker of a
discarded position is refused, not misread). Rows no resumable position needs (proto-sessions closed at
or before the oldest one) are garbage (`collect`).

The library defines the interface and keeps one in memory (`MemoryStore`,
for tests and in-process use); the durable one lives outside the domain
(`flows.state_store`), so this package still imports no engine.
"""

from __future__ import annotations

import secrets
from typing import Iterable, NamedTuple, Protocol

# (session id in the store, metadata blob, hit chunks written with it)
Change = tuple[int, bytes, list[bytes]]
# (session id, metadata blob as of the position, every hit chunk up to it)
Stored = tuple[int, bytes, list[bytes]]


class Marker(NamedTuple):
    """Where a store stood when a snapshot was taken: its kind, its
    position, and the token of the store it was written to (so a snapshot
    is never resumed against another store that happens to share a name)."""

    kind: str
    position: int
    token: str


class StoreMismatch(ValueError):
    """A snapshot's marker does not fit the store it is resumed against."""


class ShardStore(Protocol):
    """What a session shard needs of its store."""

    def write(self, changes: list[Change], closed: list[int]) -> Marker:
        """Write one position atomically: `changes` (new hit chunks and the
        latest metadata of changed proto-sessions) and the ids of those that
        closed (or left the shard) since the last position."""
        ...

    def keep_dictionary(self, dict_id: int, data: bytes) -> None:
        """Keep a compression dictionary chunks about to be written use
        (`protosessions.codec`); kept through rollbacks."""
        ...

    def rollback(self, marker: Marker | None) -> None:
        """Make the store stand exactly at `marker` (None: empty), discarding
        every later position; `StoreMismatch` if it cannot."""
        ...

    def load(self, by_session: bool = False) -> Iterable[Stored]:
        """The open proto-sessions at the store's current position
        (`by_session`: reading one at a time, as a memory budget needs)."""
        ...

    def read(self, sid: int) -> Iterable[bytes]:
        """The hit chunks of one proto-session up to the current position, in
        order (for hits a memory budget left only in the store)."""
        ...

    def collect(self, oldest: int) -> int:
        """Drop what no position at or after `oldest` needs; rows dropped."""
        ...

    def close(self) -> None: ...


class MemoryStore:
    """`ShardStore` in memory: the same positions, rollback and collection
    as the durable store, for tests and for in-process users."""

    kind = "memory"

    def __init__(self) -> None:
        self.token = secrets.token_hex(8)
        self.position = 0
        self.last = 0  # the greatest position ever written: none is numbered twice
        self.positions: set[int] = set()  # those of the current timeline
        self.meta: dict[int, list[tuple[int, bytes]]] = {}  # sid -> [(position, blob)]
        self.chunks: dict[int, list[tuple[int, bytes]]] = {}  # sid -> [(position, chunk)]
        self.closed: dict[int, int] = {}  # sid -> position it closed at
        self.bytes_written = 0

    def write(self, changes: list[Change], closed: list[int]) -> Marker:
        pos = self.last + 1
        for sid, blob, chunks in changes:
            self.meta.setdefault(sid, []).append((pos, blob))
            self.chunks.setdefault(sid, []).extend((pos, c) for c in chunks)
            self.bytes_written += len(blob) + sum(map(len, chunks))
        for sid in closed:
            self.closed[sid] = pos
        self.position = self.last = pos
        self.positions.add(pos)
        return Marker(self.kind, pos, self.token)

    def keep_dictionary(self, dict_id: int, data: bytes) -> None:
        return None  # in this process, `protosessions.codec` knows it

    def rollback(self, marker: Marker | None) -> None:
        target = 0 if marker is None else check_marker(marker, self.kind, self.token,
                                                       marker[1] in self.positions,
                                                       "memory store")
        for rows in (self.meta, self.chunks):
            for sid in list(rows):
                kept = [r for r in rows[sid] if r[0] <= target]
                if kept:
                    rows[sid] = kept
                else:
                    del rows[sid]
        self.closed = {s: p for s, p in self.closed.items() if p <= target}
        self.positions = {p for p in self.positions if p <= target}
        self.position = target

    def load(self, by_session: bool = False) -> Iterable[Stored]:
        for sid, versions in sorted(self.meta.items()):
            if sid not in self.closed:
                yield sid, versions[-1][1], [c for _, c in self.chunks.get(sid, [])]

    def read(self, sid: int) -> Iterable[bytes]:
        return [c for _, c in self.chunks.get(sid, [])]

    def collect(self, oldest: int) -> int:
        dropped = 0
        for sid, pos in list(self.closed.items()):
            if pos <= oldest:
                dropped += len(self.meta.pop(sid, ())) + len(self.chunks.pop(sid, ())) + 1
                del self.closed[sid]
        for sid, versions in self.meta.items():
            keep = [i for i, (p, _) in enumerate(versions) if p <= oldest]
            if len(keep) > 1:
                dropped += keep[-1]
                del versions[:keep[-1]]
        self.positions = {p for p in self.positions if p >= oldest}
        return dropped

    def close(self) -> None:
        return None


def resume_at(store: "ShardStore | None", marker: tuple, what: str) -> ShardStore:
    """`store` rolled back to a store snapshot's `marker` (`what`: what the
    snapshot keeps there, for the error when no store was given)."""
    if store is None:
        raise ValueError(f"this {what} are in a state store, and none was given")
    store.rollback(Marker(*marker))
    return store


def check_marker(marker: Marker, kind: str, token: str, held: bool, name: str) -> int:
    """The position to roll back to, or `StoreMismatch` naming `name`
    (`held`: whether the store holds the marker's position)."""
    if not isinstance(marker, tuple) or len(marker) != 3:
        raise StoreMismatch(f"{name}: the snapshot holds no store marker ({marker!r})")
    m_kind, m_pos, m_token = marker
    if m_kind != kind or m_token != token:
        raise StoreMismatch(f"{name} is not the store this snapshot was written to "
                            f"(snapshot: {m_kind} {m_token}, store: {kind} {token})")
    if not held:
        raise StoreMismatch(f"{name} does not hold position {m_pos} of the snapshot: it is "
                            "older or newer than the recovery partitions")
    return m_pos
