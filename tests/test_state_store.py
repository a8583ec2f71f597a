"""The state store: a snapshot writes what changed, and resuming any snapshot
still held (not only the latest) gives the sessions of a run never stopped,
byte for byte. Against the in-memory store and the SQLite one."""

from __future__ import annotations

import io
import pickle
import random
import sqlite3
from datetime import datetime, timezone

import pytest

from flows.state_store import SqliteStore, StateStoreError, check_store_file
from protosessions.clock import Clock
from protosessions.config import Settings
from protosessions.engine import IdentityShard, SessionShard
from protosessions.generate import write_hits
from protosessions.hit import parse_hit
from protosessions.store import MemoryStore, StoreMismatch


def generated(n: int, seed: int) -> list[bytes]:
    buf = io.BytesIO()
    write_hits(buf, n, max(n // 20, 5), seed=seed, start=datetime(2025, 3, 1, tzinfo=timezone.utc))
    return buf.getvalue().splitlines()


def parsed(lines: list[bytes], settings: Settings) -> list:
    out, clock = [], 0
    for raw in lines:
        hit = parse_hit(raw, settings, None, clock)
        if hit.__class__ is not str:
            clock = max(clock, hit.t)
            out.append(hit)
    return out


def make_store(kind: str, tmp_path, name: str = "s.sqlite3"):
    return MemoryStore() if kind == "memory" else SqliteStore(str(tmp_path / name))


def reopen(kind: str, store, tmp_path, name: str = "s.sqlite3"):
    """The store as a new process would find it (the SQLite one is reopened)."""
    if kind == "memory":
        return store
    store.close()
    return SqliteStore(str(tmp_path / name))


def run(settings: Settings, hits: list) -> list[bytes]:
    ident, sess = IdentityShard(settings), SessionShard(settings, Clock())
    out = [b for _, b in sess.on_hits(ident.on_hits(hits))]
    return out + [b for _, b in sess.close_all()]


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
@pytest.mark.parametrize("compaction", ["0B", "2KiB"])
def test_resuming_any_held_snapshot_gives_the_same_sessions(kind, compaction, tmp_path) -> None:
    """Snapshots every few hits into the store; then, a few times, "crash"
    and resume one of the snapshots taken so far (older ones too, as Bytewax
    may resume any epoch it still holds), replaying the hits from there. The
    sessions, deduplicated as the output's readers do, equal one unbroken
    run's, and no session has two contents."""
    settings = Settings.from_strings(compaction_threshold=compaction, max_events="40")
    hits = parsed(generated(3000, 5), settings)
    whole = run(settings, [pickle.loads(pickle.dumps(h)) for h in hits])
    rng = random.Random(7)
    store = make_store(kind, tmp_path)
    ident, sess = IdentityShard(settings), SessionShard(settings, Clock(), None, store)
    snaps: list[tuple[int, tuple, tuple]] = []  # (hits done, identity snapshot, session one)
    out: list[bytes] = []
    i, crashes = 0, 0
    while i < len(hits):
        step = rng.randint(1, 60)
        batch = [pickle.loads(pickle.dumps(h)) for h in hits[i:i + step]]
        out.extend(b for _, b in sess.on_hits(ident.on_hits(batch)))
        i += len(batch)
        snaps.append((i, pickle.loads(pickle.dumps(ident.snapshot())),
                      pickle.loads(pickle.dumps(sess.snapshot()))))
        if crashes < 6 and rng.random() < 0.04:
            crashes += 1
            i, isnap, ssnap = snaps[rng.randrange(len(snaps))]
            snaps = [s for s in snaps if s[0] <= i]  # later ones are gone with the crash
            store = reopen(kind, store, tmp_path)
            if rng.random() < 0.5:
                store.collect(min(s[2][3][1] for s in snaps))  # what Bytewax still holds
            ident, sess = IdentityShard(settings, isnap), SessionShard(settings, Clock(), ssnap, store)
    out.extend(b for _, b in sess.close_all())
    assert crashes >= 2
    assert set(out) == set(whole)
    assert len({orjson_id(b) for b in out}) == len(set(out))  # one content per session id


def orjson_id(record: bytes) -> str:
    import orjson
    return orjson.loads(record)["session_id"]


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
def test_each_hit_is_written_once(kind, tmp_path) -> None:
    """A snapshot writes the new hits and metadata of changed proto-sessions
    only: the bytes written grow with the input, not with what is open."""
    settings = Settings.from_strings(session_duration="24h", compaction_threshold="4KiB")
    hits = parsed(generated(2000, 3), settings)
    store = make_store(kind, tmp_path)
    shard = SessionShard(settings, Clock(), None, store)
    written = []
    for k in range(0, len(hits), 100):
        shard.on_hits(hits[k:k + 100])
        before = store.bytes_written
        shard.snapshot()
        written.append(store.bytes_written - before)
    before = store.bytes_written
    shard.snapshot()  # nothing new: (almost) nothing written
    assert store.bytes_written == before
    assert len(shard.state.sessions) > 50  # all open, growing
    assert max(written[5:]) < 3 * min(written[5:])  # flat, not growing with the open state
    raw = sum(len(h.raw) for h in hits)
    assert store.bytes_written < raw  # compressed, and each hit once


def test_a_rolled_back_position_is_never_resumed(tmp_path) -> None:
    """Rows of positions written after the resumed one are discarded and their
    numbers not used again: a stale marker of one is refused, not misread."""
    store = MemoryStore()
    first = store.write([(1, pickle.dumps(0), [b"a"])], [])
    stale = store.write([(1, pickle.dumps(1), [b"b"])], [])
    store.rollback(first)
    again = store.write([(1, pickle.dumps(2), [b"c"])], [])
    assert again.position > stale.position
    assert [c for _, _, c in store.load()] == [[b"a", b"c"]]
    with pytest.raises(StoreMismatch):
        store.rollback(stale)
    other = MemoryStore()
    with pytest.raises(StoreMismatch):
        other.rollback(first)


def test_a_store_of_another_format_or_damaged_is_refused_in_one_line(tmp_path) -> None:
    path = tmp_path / "s.sqlite3"
    SqliteStore(str(path)).close()
    with sqlite3.connect(path) as db:
        db.execute("UPDATE info SET value = '0' WHERE name = 'format'")
    with pytest.raises(StateStoreError) as e:
        SqliteStore(str(path))
    assert "format" in str(e.value) and "\n" not in str(e.value)
    settings = Settings()
    path2 = tmp_path / "t.sqlite3"
    store = SqliteStore(str(path2))
    shard = SessionShard(settings, Clock(), None, store)
    shard.on_hits(parsed(generated(50, 1), settings))
    shard.snapshot()
    store.close()
    check_store_file(str(path2))
    with sqlite3.connect(path2) as db:
        db.execute("UPDATE chunks SET blob = substr(blob, 1, 8) || zeroblob(length(blob) - 8)")
    with pytest.raises(Exception):
        check_store_file(str(path2))
