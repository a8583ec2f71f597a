"""The state store: a snapshot writes what changed, and resuming any snapshot
still held (not only the latest) gives the sessions of a run never stopped,
byte for byte. Against the in-memory store and the SQLite one."""

from __future__ import annotations

import io
import pickle
import random
import sqlite3
from datetime import datetime, timezone
from pathlib import Path

import pytest

from flows.state_store import SqliteStore, StateStoreError, check_store_file
from protosessions.clock import Clock
from protosessions.config import Settings
from protosessions.engine import IdentityShard, SessionShard
from protosessions.generate import write_hits
from protosessions.hit import parse_hit
from protosessions.store import Marker, MemoryStore, StoreMismatch


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
@pytest.mark.parametrize("compaction,budget", [("0B", 0), ("2KiB", 0), ("2KiB", 3000), ("0B", 3000)])
def test_resuming_any_held_snapshot_gives_the_same_sessions(kind, compaction, budget,
                                                            tmp_path) -> None:
    """Snapshots every few hits into the store; then, a few times, "crash"
    and resume one of the snapshots taken so far (older ones too, as Bytewax
    may resume any epoch it still holds), replaying the hits from there. The
    sessions, deduplicated as the output's readers do, equal one unbroken
    run's, and no session has two contents. With a memory budget, sealed
    blocks past it leave RAM for the store (exactly counted), and are read
    back when their proto-session closes or is resumed."""
    settings = Settings.from_strings(compaction_threshold=compaction, max_events="40")
    hits = parsed(generated(3000, 5), settings)
    whole = run(settings, [pickle.loads(pickle.dumps(h)) for h in hits])
    rng = random.Random(7)
    store = make_store(kind, tmp_path)
    ident, sess = IdentityShard(settings), SessionShard(settings, Clock(), None, store, budget)
    snaps: list[tuple[int, tuple, tuple]] = []  # (hits done, identity snapshot, session one)
    out: list[bytes] = []
    i, crashes, spilled = 0, 0, 0
    while i < len(hits):
        step = rng.randint(1, 60)
        batch = [pickle.loads(pickle.dumps(h)) for h in hits[i:i + step]]
        out.extend(b for _, b in sess.on_hits(ident.on_hits(batch)))
        i += len(batch)
        state = sess.state
        assert state.sealed_bytes == sum(len(b) for ps in state.sessions.values() for b in ps.compacted)
        if budget:
            assert state.sealed_bytes <= budget
            spilled = max(spilled, sum(ps.on_disk for ps in state.sessions.values()))
        snaps.append((i, pickle.loads(pickle.dumps(ident.snapshot())),
                      pickle.loads(pickle.dumps(sess.snapshot()))))
        if crashes < 6 and rng.random() < 0.04:
            crashes += 1
            i, isnap, ssnap = snaps[rng.randrange(len(snaps))]
            snaps = [s for s in snaps if s[0] <= i]  # later ones are gone with the crash
            store = reopen(kind, store, tmp_path)
            if rng.random() < 0.5:
                store.collect(min(s[2][3][1] for s in snaps))  # what Bytewax still holds
            ident, sess = IdentityShard(settings, isnap), SessionShard(settings, Clock(), ssnap, store,
                                                                       budget)
    out.extend(b for _, b in sess.close_all())
    assert crashes >= 2
    assert bool(spilled) == bool(budget)
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
        db.execute("UPDATE log SET chunks = substr(chunks, 1, 8) || zeroblob(length(chunks) - 8)")
    with pytest.raises(Exception):
        check_store_file(str(path2))


def _changing_store(tmp_path, name: str = "s.sqlite3") -> tuple[SqliteStore, SessionShard]:
    """A store whose open proto-sessions each changed at many positions."""
    settings = Settings.from_strings(session_duration="24h")
    store = SqliteStore(str(tmp_path / name))
    shard = SessionShard(settings, Clock(), None, store)
    hits = parsed(generated(3000, 9), settings)
    for k in range(0, len(hits), 50):
        shard.on_hits(hits[k:k + 50])
        shard.snapshot()
    return store, shard


def test_collection_writes_what_it_keeps_never_hits(tmp_path) -> None:
    """Collecting old metadata versions costs about the metadata it keeps
    (copied once), not a page per dropped row: the pages it writes (the WAL
    after it) hold under twice the kept rows' bytes, none of them a byte run
    of any stored hit chunk. What it keeps loads as before."""
    store, shard = _changing_store(tmp_path)
    before = list(store.load())
    blobs = [b for (b,) in store.db.execute("SELECT chunks FROM log")]
    runs = {blob[i:i + 24] for blob in blobs for i in range(0, len(blob) - 24, 200)}
    versions = store.db.execute("SELECT count(*) FROM meta").fetchone()[0]
    assert versions > 3 * len(before) and len(runs) > 1000  # much to drop, much to keep
    store.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    assert store.collect(store.position) >= versions - len(before)
    wal = Path(store.path + "-wal").read_bytes()
    kept = store.db.execute("SELECT count(*), sum(length(row)) FROM meta").fetchone()
    assert kept[0] == len(before)
    assert kept[1] < len(wal) < 2 * kept[1] + 16 * 1024, (len(wal), kept)
    assert not [r for r in runs if r in wal]
    assert list(store.load()) == before == list(store.load(by_session=True))


def test_collection_drops_closed_proto_sessions_and_keeps_what_resumes(tmp_path) -> None:
    """With proto-sessions closing, a collection at an older position keeps
    what a resume there needs (rolling back to it loads what it loaded
    then); one at the current position leaves only the open ones' rows."""
    settings = Settings.from_strings(max_events="5")
    store = SqliteStore(str(tmp_path / "s.sqlite3"))
    shard = SessionShard(settings, Clock(), None, store)
    hits = parsed(generated(3000, 4), settings)
    loads, markers = {}, {}
    for k in range(0, len(hits), 100):
        shard.on_hits(hits[k:k + 100])
        marker = Marker(*shard.snapshot()[3])
        markers[marker.position] = marker
        loads[marker.position] = list(store.load())
    middle = sorted(loads)[len(loads) // 2]
    assert store.collect(middle) > 0
    assert list(store.load()) == loads[store.position]
    store.rollback(markers[middle])
    assert list(store.load()) == loads[middle]
    store.collect(store.position)
    open_sids = {sid for sid, _, _ in loads[middle]}
    assert 0 < len(open_sids) < shard.state.next_sid - 1  # some closed, some open
    for table in ("log", "meta"):
        assert {sid for (sid,) in store.db.execute(f"SELECT sid FROM {table}")} == open_sids
    assert store.db.execute("SELECT count(*) FROM closes").fetchone()[0] == 0
    assert list(store.load()) == loads[middle]


def test_a_store_of_format_1_is_converted_and_resumes(tmp_path) -> None:
    """A store written by the build that kept metadata in the log (format 1)
    is converted as it is opened: the same proto-sessions at the same
    position, and the shard resumes from it."""
    store, shard = _changing_store(tmp_path)
    snap = shard.snapshot()
    before, position = list(store.load()), store.position
    store.close()
    with sqlite3.connect(tmp_path / "s.sqlite3") as db:  # the format 1 table, by hand
        db.executescript("""
            CREATE TABLE old (pos INTEGER NOT NULL, sid INTEGER NOT NULL, kind INTEGER NOT NULL,
                              meta BLOB, chunks BLOB);
            INSERT INTO old SELECT * FROM (
                SELECT l.pos, l.sid, 1, m.row, l.chunks FROM log l
                    LEFT JOIN meta m ON m.pos = l.pos AND m.sid = l.sid
                UNION ALL SELECT pos, sid, 2, NULL, NULL FROM closes
                UNION ALL SELECT pos, 0, 0, NULL, NULL FROM positions) ORDER BY 1, 3 = 0;
            DROP TABLE log; DROP TABLE meta; DROP TABLE closes; DROP TABLE positions;
            ALTER TABLE old RENAME TO log;
            UPDATE info SET value = '1' WHERE name = 'format';
        """)
    again = SqliteStore(str(tmp_path / "s.sqlite3"))
    assert again.position == position
    assert list(again.load()) == before
    resumed = SessionShard(Settings.from_strings(session_duration="24h"), Clock(), snap, again)
    assert len(resumed.state.sessions) == len(before)


# --- the damaged-store check -----------------------------------------------------------------------

def _cli(*args: str, cwd=None):
    import subprocess
    import sys
    return subprocess.run([sys.executable, "-m", "flows.cli", *args], capture_output=True,
                          text=True, timeout=300, cwd=cwd)


@pytest.fixture(scope="module")
def finished_store(tmp_path_factory):
    """A recovery directory of a run SIGKILLed after a few snapshots (open
    state in the stores), and the run's arguments."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from recovery_support import last_epoch

    d = tmp_path_factory.mktemp("damage")
    (d / "hits.jsonl").write_bytes(b"\n".join(generated(60000, 9)) + b"\n")
    assert _cli("recovery", "init", str(d / "rec"), "--partitions", "2").returncode == 0
    args = ["run", "--input", str(d / "hits.jsonl"), "--output", str(d / "out.jsonl"),
            "--dead-letter", str(d / "dead.jsonl"), "--recovery-dir", str(d / "rec"),
            "--snapshot-interval", "100ms", "--session-duration", "24h"]  # epochs before the end, even on an idle machine
    proc = subprocess.Popen([sys.executable, "-m", "flows.cli", *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    while proc.poll() is None and last_epoch(d / "rec") < 3:
        time.sleep(0.05)
    assert proc.poll() is None, "finished before the kill: make the input larger"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(30)
    return d, args


def _text_offsets(data: bytes) -> list[int]:
    """Offsets of bytes of text columns (step ids, shard keys, timestamps) in a partition file."""
    import re
    spans = [m.span() for m in re.finditer(rb"protosessions\.[a-z_]+|[is][0-9]+(?:\.[0-9]+)?"
                                           rb"|20[0-9]{2}-[0-9]{2}-[0-9]{2} [0-9:]{8}", data)]
    return [i for a, b in spans for i in range(a, b)]


def test_a_flipped_byte_in_a_text_column_is_one_line_never_a_traceback(finished_store, tmp_path) -> None:
    """Random single-byte flips in the text columns of partition files: the
    check returns one line or None (a flip that changes nothing Bytewax or
    this flow reads), and never raises."""
    import shutil

    from flows.recovery import damaged_snapshot, partitions

    rng = random.Random(3)
    found = 0
    for trial in range(16):
        rec = tmp_path / f"rec{trial}"
        shutil.copytree(finished_store[0] / "rec", rec)
        part = rng.choice(partitions(str(rec)))
        data = bytearray(open(part, "rb").read())
        offset = rng.choice(_text_offsets(bytes(data)))
        data[offset] ^= rng.choice([0x80, 0xC0, 0x01, 0x20])
        open(part, "wb").write(bytes(data))
        line = damaged_snapshot(str(rec))  # must not raise
        if line is not None:
            found += 1
            assert "\n" not in line and "damaged" in line
    assert found >= 4  # (a flip in a stale page of a WAL database, or a timestamp, is harmless)


def test_the_cli_refuses_a_damaged_state_store_in_one_line(finished_store, tmp_path) -> None:
    import shutil

    from flows.state_store import store_files

    d, args = finished_store
    rec = d / "rec"
    shutil.copytree(rec, tmp_path / "kept")
    proc = _cli(*args[:-2], "--max-events", "7")  # not a damage: refused before the check
    assert proc.returncode == 2 and "damaged" not in proc.stderr
    damaged = 0
    for path in store_files(str(rec)):
        with sqlite3.connect(path) as db:
            damaged += db.execute("UPDATE log SET chunks = zeroblob(length(chunks))").rowcount
    assert damaged
    proc = _cli(*args)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
    assert "Traceback" not in proc.stderr and "state" in proc.stderr
    assert "damaged" in proc.stderr
    shutil.rmtree(rec)
    shutil.copytree(tmp_path / "kept", rec)
    shutil.rmtree(rec / "state")  # the stores gone: the snapshots name stores that are not there
    proc = _cli(*args)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "damaged" in proc.stderr
    shutil.rmtree(rec)
    shutil.copytree(tmp_path / "kept", rec)  # as it was: the resume finishes


def test_a_store_a_process_was_killed_creating_is_no_damage(tmp_path) -> None:
    path = tmp_path / "state" / "sessions-0000.sqlite3"
    path.parent.mkdir()
    sqlite3.connect(path).close()  # created, nothing written
    check_store_file(str(path))
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE info (name TEXT PRIMARY KEY, value TEXT NOT NULL)")
    check_store_file(str(path))


@pytest.mark.parametrize("when", ["before", "after"])
def test_a_kill_inside_a_snapshot_loses_nothing_and_doubles_nothing(when, tmp_path) -> None:
    """SIGKILL inside a state store write (rows written, not committed; or
    committed, and the Bytewax snapshot naming them not yet written), at a
    random write, twice; the resumed run's sessions are an unbroken run's."""
    import os
    import sys
    from pathlib import Path

    import orjson

    root = Path(__file__).resolve().parent.parent
    hits = tmp_path / "hits.jsonl"
    hits.write_bytes(b"\n".join(generated(40000, 21)) + b"\n")
    ref = tmp_path / "ref.jsonl"
    assert _cli("run", "--input", str(hits), "--output", str(ref), "--dead-letter",
                str(tmp_path / "rd")).returncode == 0
    rec, out = tmp_path / "rec", tmp_path / "out.jsonl"
    assert _cli("recovery", "init", str(rec), "--partitions", "2").returncode == 0
    args = ["run", "--input", str(hits), "--output", str(out), "--dead-letter",
            str(tmp_path / "dead"), "--recovery-dir", str(rec), "--snapshot-interval", "100ms"]
    rng = random.Random(os.getpid())
    import subprocess
    killed = 0
    for _ in range(2):
        n = rng.randint(70, 200)  # 64 shards write once an epoch: past the first epoch
        proc = subprocess.run([sys.executable, str(root / "tests" / "kill_in_snapshot.py"), str(n),
                               when, *args], capture_output=True, text=True, timeout=300, cwd=root)
        killed += proc.returncode == -9
        assert proc.returncode in (0, -9), proc.stderr
    assert killed >= 1, "the run finished before the kill: make the input larger"
    done = _cli(*args)
    assert done.returncode == 0, done.stderr

    def by_id(path) -> dict:
        got: dict = {}
        for line in path.read_bytes().splitlines():
            s = orjson.loads(line)
            assert got.setdefault(s["session_id"], s) == s
        return got
    assert by_id(out) == by_id(ref)


def test_a_store_opened_by_another_process_reads_its_dictionary(tmp_path) -> None:
    """The dictionary a store's chunks use is in the store: a process that
    never trained it reads them."""
    import subprocess
    import sys

    settings = Settings()
    path = tmp_path / "s.sqlite3"
    store = SqliteStore(str(path))
    shard = SessionShard(settings, Clock(), None, store)
    shard.on_hits(parsed(generated(2000, 4), settings))
    shard.snapshot()
    store.close()
    from protosessions.codec import dictionaries
    assert dictionaries.current
    code = ("import sys; from flows.state_store import SqliteStore; "
            "from protosessions.state import ProtoSession; s = SqliteStore(sys.argv[1]); "
            "print(sum(ProtoSession.from_stored(*r).count for r in s.load()))")
    proc = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert int(proc.stdout) == sum(ps.count for ps in shard.state.sessions.values())


@pytest.mark.parametrize("mode", ["ids", "none"])
@pytest.mark.parametrize("compaction", ["0B", "1KiB"])
def test_ids_and_none_keep_no_hit_bytes_and_give_the_same_sessions(mode, compaction) -> None:
    """`--session-hits ids|none` hold no hit bytes in the open state, and
    their records are `full`'s with `hits` as ids (or without it), through a
    snapshot and restore too."""
    import orjson

    full_settings = Settings.from_strings(compaction_threshold=compaction)
    settings = Settings.from_strings(compaction_threshold=compaction, session_hits=mode)
    hits = parsed(generated(3000, 8), settings)
    full = {orjson.loads(b)["session_id"]: orjson.loads(b) for b in run(full_settings, hits)}
    ident, sess = IdentityShard(settings), SessionShard(settings, Clock(), None, MemoryStore())
    half = len(hits) // 2
    out = [b for _, b in sess.on_hits(ident.on_hits(hits[:half]))]
    held = [h for ps in sess.state.sessions.values() for h in sess.ctx.collect_all((ps.property_id, ps.acid))]
    assert held and all(h[1] == b"" for h in held)
    store = sess.state.store
    sess = SessionShard(settings, Clock(), sess.snapshot(), store)
    out += [b for _, b in sess.on_hits(ident.on_hits(hits[half:]))]
    out += [b for _, b in sess.close_all()]
    got = {orjson.loads(b)["session_id"]: orjson.loads(b) for b in out}
    assert got.keys() == full.keys()
    for sid, rec in full.items():
        ids = [h["id"] for h in rec.pop("hits")]
        other = got[sid]
        assert other.pop("hits", None) == (ids if mode == "ids" else None)
        assert other == rec


def test_a_budget_never_reached_keeps_no_entry_per_closed_session() -> None:
    """The queue of sealed proto-sessions a budget spills from keeps entries
    of open ones only (bounded by them), however many closed since."""
    settings = Settings.from_strings(session_duration="2m")
    hits = parsed(generated(6000, 4), settings)
    sess = SessionShard(settings, Clock(), None, MemoryStore(), 10**12)
    closed = 0
    for k in range(0, len(hits), 50):
        closed += len(sess.on_hits(hits[k:k + 50]))
        state = sess.state
        assert len(state.cold) <= 2 * len(state.sessions) + 65
    assert closed > 200 and state.sealed_bytes > 0


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
@pytest.mark.parametrize("rules,strategy", [("classic", "rewrite"), ("d8a", "rewrite"),
                                            ("classic", "evict")])
def test_identity_claims_in_a_store_resume_as_the_whole_table(kind, rules, strategy,
                                                              tmp_path) -> None:
    """An identity shard with a store writes only the claims hits touched
    since its last snapshot, and the ids of those it forgot; resuming any
    of its snapshots (a rollback) gives the very claim table an unbroken
    shard had there, which the next hits then change alike."""
    settings = Settings.from_strings(identity_rules=rules, eviction_strategy=strategy,
                                     session_duration="10m")
    hits = parsed(generated(4000, 11), settings)
    store = make_store(kind, tmp_path)
    shard, plain = IdentityShard(settings, None, store), IdentityShard(settings)
    rng = random.Random(3)
    snaps, written, i, resumed, most = [], [], 0, 0, 0
    while i < len(hits):
        batch = hits[i:i + rng.randint(1, 20)]
        i += len(batch)
        shard.on_hits([pickle.loads(pickle.dumps(h)) for h in batch])
        plain.on_hits([pickle.loads(pickle.dumps(h)) for h in batch])
        before = store.bytes_written
        snaps.append((i, shard.snapshot(), plain.snapshot()))
        written.append((store.bytes_written - before, len(pickle.dumps(snaps[-1][2]))))
        most = max(most, len(plain.table.claims))
        if resumed < 6 and rng.random() < 0.02:
            at, snap, whole = snaps[rng.randrange(len(snaps))]
            snaps = [s for s in snaps if s[0] <= at]
            store = reopen(kind, store, tmp_path)
            shard = IdentityShard(settings, snap, store)
            plain = IdentityShard(settings, whole)
            assert _claims(shard.table.snapshot()) == _claims(whole)  # claim for claim
            i, resumed = at, resumed + 1
    assert resumed >= 2
    assert most > 50 and 0 < len(plain.table.claims) < most  # many claims, some forgotten
    assert _claims(shard.table.snapshot()) == _claims(plain.snapshot())
    ours, whole = (sum(x) for x in zip(*written))
    assert ours < whole / 3, (ours, whole)  # the claims that changed, not the table


def _claims(snap: tuple) -> tuple:
    """A whole claim table snapshot with its claims as a dict (their order is no behaviour)."""
    return (*snap[:2], {c[0]: c[1:] for c in snap[2]}, snap[3])
