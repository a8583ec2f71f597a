"""The durable state store: one SQLite file per session shard and per
identity shard, in the recovery directory
(`<dir>/state/sessions-<shard>.sqlite3`, `identity-<shard>.sqlite3`).

A session shard's snapshot writes its changes here as one position (one
transaction: new hit chunks, the latest metadata of changed proto-sessions,
the ids of those that closed) and Bytewax's own snapshot keeps only the
marker of that position (`protosessions.store`). An identity shard's
snapshot writes its changed claims (as metadata without chunks) and the ids
of those it forgot. Any process can open any shard's file on the shared
volume, so the store moves with its shard when a resume changes the number
of workers or processes.

Garbage: rows of proto-sessions closed at or before the oldest position any
resumable epoch names, and metadata versions older than that position's.
Which positions are resumable is read where Bytewax keeps them: the markers
in the `snaps` rows it still holds for the shard (it deletes older ones as
its own commits allow, keeping `--backup-interval` of them).
"""

from __future__ import annotations

import glob
import os
import pickle
import secrets
import sqlite3
import time
from pathlib import Path
from typing import Iterable, Optional

from protosessions.codec import dictionaries
from protosessions.store import Change, Marker, Stored, check_marker

FORMAT = "2"  # of the tables below; format 1 is converted on open, any other refused
SUBDIR = "state"
COLLECT_EVERY_S = 30.0  # garbage collection, at most this often per shard
# SYNC: WAL with synchronous=NORMAL. A commit survives the process being
# killed (it is in the WAL file), not an OS crash or power loss before the
# next checkpoint; fsyncing every shard's commit costs ~4 ms each, 64 shards
# a snapshot (a quarter of a core at --snapshot-interval 1s). Should the OS
# lose a position the partitions name, the resume is refused in one line
# (`check_marker`), never misread.

# Append-only tables: a write appends its rows at the end of each (rowid
# order is position order), so a commit touches the last page or two of
# them, not a page per changed proto-session, as tables keyed by session
# would; pages of 1 KiB keep that small too. `log`: each change's new hit
# chunks (pickled); `meta`: each changed proto-session's metadata at a
# position; `closes`: the proto-sessions closed at a position; `positions`:
# the positions written. Collection never deletes a row here and there
# (that rewrites the page around each row, its neighbours' hits with it,
# about a page per changed proto-session): once enough of a table's rows
# are garbage, the rest are copied, in order, to a new table that replaces
# it, and the old one's pages are freed, not rewritten (with `secure_delete`
# FAST: Debian's SQLite zeroes freed pages by default, which writes them all
# again). Hit chunks: at half, so the file stays within twice the open hits
# and each chunk is copied about once; metadata (a new version with every
# change, a small part of the file): at three quarters, so a change costs a
# third of a row's copy, not a whole one.
_GARBAGE = {"log": 1 / 2, "meta": 3 / 4}  # share of garbage rows that collects a table
_TABLES = {
    "log": "(pos INTEGER NOT NULL, sid INTEGER NOT NULL, chunks BLOB NOT NULL)",
    "meta": "(pos INTEGER NOT NULL, sid INTEGER NOT NULL, row BLOB NOT NULL)",
    "closes": "(pos INTEGER NOT NULL, sid INTEGER NOT NULL)",
    "positions": "(pos INTEGER PRIMARY KEY)",
}
_SCHEMA = """
CREATE TABLE IF NOT EXISTS info (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS dictionaries (id INTEGER PRIMARY KEY, data BLOB NOT NULL);
""" + "".join(f"CREATE TABLE IF NOT EXISTS {name} {columns};\n" for name, columns in _TABLES.items())
# Format 1 kept all but the dictionaries in `log`, a row kind each (0: a
# position, 1: metadata and chunks, 2: a close); they move to their tables.
_FROM_FORMAT_1 = f"""
CREATE TABLE meta {_TABLES["meta"]};
CREATE TABLE closes {_TABLES["closes"]};
CREATE TABLE positions {_TABLES["positions"]};
INSERT INTO meta SELECT pos, sid, meta FROM log WHERE kind = 1 AND meta IS NOT NULL ORDER BY rowid;
INSERT INTO closes SELECT pos, sid FROM log WHERE kind = 2 ORDER BY rowid;
INSERT INTO positions SELECT pos FROM log WHERE kind = 0;
DELETE FROM log WHERE kind != 1;
ALTER TABLE log DROP COLUMN meta;
ALTER TABLE log DROP COLUMN kind;
UPDATE info SET value = '2' WHERE name = 'format';
"""


class StateStoreError(ValueError):
    """A state store file that cannot be used (one line, naming the file)."""


STEPS = ("sessions", "identity")  # the keyed steps with a store per shard, the files' prefixes


def store_path(directory: str, shard: int, step: str = "sessions") -> str:
    return os.path.join(directory, SUBDIR, f"{step}-{shard:04d}.sqlite3")


def store_files(directory: str) -> list[str]:
    folder = Path(directory, SUBDIR)
    if not folder.is_dir():
        return []
    return sorted(str(p) for step in STEPS for p in folder.glob(f"{step}-*.sqlite3"))


class SqliteStore:
    """`protosessions.store.ShardStore` in one SQLite file (WAL journal, as
    Bytewax's partitions). Used by one worker at a time: the one that holds
    the shard."""

    kind = "sqlite"

    def __init__(self, path: str, create: bool = True) -> None:
        self.path = path
        if create:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        elif not os.path.exists(path):
            raise StateStoreError(f"state store {path} does not exist")
        try:
            self.db = sqlite3.connect(path, timeout=5, isolation_level=None,
                                      check_same_thread=False)
            self.db.text_factory = bytes  # decoded by hand: a damaged text is one clear line
            self.db.execute("PRAGMA page_size=1024")  # takes effect only as the file is created
            self.db.execute("PRAGMA synchronous=NORMAL")  # see SYNC above
            self.db.execute("PRAGMA secure_delete=FAST")  # see the tables above
            # appends and one-session reads need few pages: 64 shards of the default 2 MiB
            # page cache would cost more RAM than a memory budget saves
            self.db.execute("PRAGMA cache_size=-128")
            self.db.execute("PRAGMA journal_mode=WAL")
            info = self._info()
            if info.get("format") == "1":
                self.db.executescript("BEGIN IMMEDIATE;" + _FROM_FORMAT_1 + "COMMIT;")
                info = self._info()
            self.db.executescript("BEGIN;" + _SCHEMA + "COMMIT;")  # one transaction
            if not info and not create:
                raise StateStoreError(f"state store {path} holds no store information")
            if not info:
                info = {"format": FORMAT, "token": secrets.token_hex(8), "last": "0"}
                with self._txn():
                    self.db.executemany("INSERT INTO info VALUES (?, ?)", list(info.items()))
            if info.get("format") != FORMAT:
                raise StateStoreError(f"state store {path} is of format {info.get('format')!r}, "
                                      f"this build reads format {FORMAT}: start afresh with a new "
                                      "recovery directory")
            self.token = info["token"]
            self.position = self.db.execute("SELECT max(pos) FROM positions").fetchone()[0] or 0
            self.last = max(int(info["last"]), self.position)
            for dict_id, data in self.db.execute("SELECT id, data FROM dictionaries"):
                dictionaries.register(dict_id, data)
        except sqlite3.Error as e:
            raise StateStoreError(f"state store {path} is not a readable SQLite file ({e})") from None
        except (KeyError, ValueError) as e:
            if isinstance(e, StateStoreError):
                raise
            raise StateStoreError(f"state store {path} has no valid store information") from None
        self.bytes_written = 0
        self.indexed = False

    def _info(self) -> dict[str, str]:
        """The `info` rows (none before the tables exist)."""
        if not self.db.execute("SELECT 1 FROM sqlite_master WHERE name = 'info'").fetchone():
            return {}
        return {k.decode("utf-8", "replace"): v.decode("utf-8", "replace")
                for k, v in self.db.execute("SELECT name, value FROM info")}

    def keep_dictionary(self, dict_id: int, data: bytes) -> None:
        self.db.execute("INSERT OR IGNORE INTO dictionaries VALUES (?, ?)", (dict_id, data))

    def _txn(self) -> "_Transaction":
        return _Transaction(self.db)

    def write(self, changes: list[Change], closed: list[int]) -> Marker:
        if not changes and not closed and self.position:
            return Marker(self.kind, self.position, self.token)  # nothing new: same position
        pos = self.last + 1  # never a number used before, even one rolled back
        metas = [(pos, sid, blob) for sid, blob, _ in changes]
        chunks = [(pos, sid, pickle.dumps(c, protocol=5)) for sid, _, c in changes if c]
        with self._txn():
            self.db.executemany("INSERT INTO meta VALUES (?, ?, ?)", metas)
            self.db.executemany("INSERT INTO log VALUES (?, ?, ?)", chunks)
            self.db.executemany("INSERT INTO closes VALUES (?, ?)", [(pos, sid) for sid in closed])
            self.db.execute("INSERT INTO positions VALUES (?)", (pos,))
        self.position = self.last = pos
        self.bytes_written += sum(len(m[2]) for m in metas) + sum(len(c[2]) for c in chunks)
        return Marker(self.kind, pos, self.token)

    def holds(self, pos: int) -> bool:
        """Whether position `pos` is in the store (written, not rolled back or collected)."""
        return self.db.execute("SELECT 1 FROM positions WHERE pos = ?", (pos,)).fetchone() is not None

    def rollback(self, marker: Marker | None) -> None:
        held = marker is not None and self.holds(int(marker[1]))
        target = 0 if marker is None else check_marker(Marker(*marker), self.kind, self.token,
                                                       held, f"state store {self.path}")
        if target == self.position and marker is not None:
            return
        with self._txn():
            for table in _TABLES:
                self.db.execute(f"DELETE FROM {table} WHERE pos > ?", (target,))
            self.db.execute("UPDATE info SET value = ? WHERE name = 'last'", (str(self.last),))
        self.position = target

    def load(self, by_session: bool = False) -> Iterable[Stored]:
        metas = self._metas()
        if by_session:
            yield from self._load_by_session(metas)
            return
        chunks: dict[int, list[bytes]] = {}
        for sid, blob in self.db.execute("SELECT sid, chunks FROM log ORDER BY rowid"):
            chunks.setdefault(sid, []).extend(pickle.loads(blob))
        for sid in sorted(metas):
            yield sid, metas[sid], chunks.get(sid, [])

    def _metas(self) -> dict[int, bytes]:
        """The latest metadata of each open proto-session."""
        closed = {sid for (sid,) in self.db.execute("SELECT sid FROM closes")}
        metas = {sid: row for sid, row in self.db.execute("SELECT sid, row FROM meta ORDER BY rowid")}
        for sid in closed:
            metas.pop(sid, None)
        return metas

    def _load_by_session(self, metas: dict[int, bytes]) -> Iterable[Stored]:
        """`load` holding one proto-session's hit chunks at a time, not the state."""
        self._index()
        for sid in sorted(metas):
            yield sid, metas[sid], self.read(sid)

    def _index(self) -> None:
        if not self.indexed:  # only a memory budget reads one session's rows: indexed then
            self.db.execute("CREATE INDEX IF NOT EXISTS log_sid ON log (sid)")
            self.indexed = True

    def read(self, sid: int) -> list[bytes]:
        self._index()
        rows = self.db.execute("SELECT chunks FROM log WHERE sid = ? ORDER BY rowid",
                               (sid,)).fetchall()
        return [chunk for (blob,) in rows for chunk in pickle.loads(blob)]

    def collect(self, oldest: int) -> int:
        """Drop the rows of proto-sessions closed at or before `oldest`,
        metadata older than each one's latest at or before it, and positions
        before it, a table once enough of it is garbage (`_GARBAGE`, see the
        tables). Scans: so at most every `COLLECT_EVERY_S`, not at each write."""
        gone = "sid IN (SELECT sid FROM closes WHERE pos <= :o)"
        # each one's latest version at or before `oldest` (rowid order is position order;
        # a one-column IN is looked up in the subquery's rows, a (sid, pos) one runs it per row)
        latest = "rowid IN (SELECT max(rowid) FROM meta WHERE pos <= :o GROUP BY sid)"
        o = {"o": oldest}
        with self._txn():
            n = self._compact("log", f"NOT {gone}", o)
            n += self._compact("meta", f"(pos > :o OR {latest}) AND NOT {gone}", o)
            n += self.db.execute("DELETE FROM closes WHERE pos <= :o AND sid NOT IN "
                                 "(SELECT sid FROM log UNION SELECT sid FROM meta)", o).rowcount
            n += self.db.execute("DELETE FROM positions WHERE pos < :o", o).rowcount
        return n

    def _compact(self, table: str, needed: str, params: dict) -> int:
        """Keep only the rows `needed` selects, once `_GARBAGE[table]` of
        its rows are not: copied in order to a new table that replaces it."""
        db = self.db
        total, keep = db.execute(f"SELECT count(*), total({needed}) FROM {table}",
                                 params).fetchone()
        if not total or total - keep < _GARBAGE[table] * total:
            return 0
        db.execute(f"CREATE TABLE compacted {_TABLES[table]}")
        db.execute(f"INSERT INTO compacted SELECT * FROM {table} WHERE {needed} ORDER BY rowid",
                   params)
        db.execute(f"DROP TABLE {table}")
        db.execute(f"ALTER TABLE compacted RENAME TO {table}")
        if table == "log" and self.indexed:
            self.indexed = False
            self._index()
        return total - int(keep)

    def close(self) -> None:
        self.db.close()


class _Transaction:
    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> None:
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, kind, value, tb) -> None:
        self.db.execute("COMMIT" if kind is None else "ROLLBACK")


def partitions(directory: str) -> list[str]:
    """Bytewax's recovery partitions in a recovery directory."""
    return sorted(glob.glob(os.path.join(directory, "part-*.sqlite3")))


def oldest_resumable(directory: str, step_id: str, state_key: str) -> Optional[int]:
    """The smallest store position among the snapshots Bytewax still holds
    for one shard (any of them may be resumed), or None when none can be
    read (then nothing is collected)."""
    positions: list[int] = []
    for part in partitions(directory):
        try:
            with sqlite3.connect(f"file:{part}?mode=ro", uri=True, timeout=1) as db:
                rows = db.execute("SELECT ser_change FROM snaps WHERE step_id = ? AND state_key = ? "
                                  "AND ser_change IS NOT NULL", (step_id, state_key)).fetchall()
        except sqlite3.Error:
            return None
        for (blob,) in rows:
            try:
                snap = pickle.loads(blob)
                positions.append(int(snap[0][3][1]))
            except Exception:
                return None
    return min(positions) if positions else None


class ShardStores:
    """Opens the store of each shard of one keyed step (`step`: its files'
    prefix) and collects its garbage now and then (`COLLECT_EVERY_S`)."""

    def __init__(self, directory: str, step_id: str, names: tuple[str, ...],
                 step: str = "sessions") -> None:
        self.directory = directory
        self.step_id = step_id
        self.names = names
        self.step = step

    def open(self, shard: int) -> SqliteStore:
        return SqliteStore(store_path(self.directory, shard, self.step))

    def open_fresh(self, shard: int) -> SqliteStore:
        """The store of a shard resumed without a snapshot, emptied: what it
        holds belongs to no resumable epoch."""
        store = self.open(shard)
        store.rollback(None)
        return store

    def maybe_collect(self, store: SqliteStore, shard: int, last: list[float]) -> None:
        """Collect `store`'s garbage if `COLLECT_EVERY_S` passed since `last[0]`."""
        now = time.monotonic()
        if now - last[0] < COLLECT_EVERY_S:
            return
        last[0] = now
        oldest = oldest_resumable(self.directory, self.step_id, self.names[shard])
        if oldest is not None:
            store.collect(min(oldest, store.position))


def check_store_file(path: str) -> None:
    """Read a whole store file as a resume would (raises what it would).
    A file that holds nothing yet (a process killed as it created it) is
    fine: no snapshot names it."""
    from protosessions.middlewares.identity import Claim
    from protosessions.state import ProtoSession

    # read-write, as `damaged_snapshot` opens partitions: a killed writer's WAL may need recovery
    with sqlite3.connect(f"file:{path}?mode=rw", uri=True) as db:
        try:
            if not db.execute("SELECT 1 FROM info").fetchone():
                return
        except sqlite3.OperationalError as e:
            if "no such table" in str(e):
                return
            raise
    store = SqliteStore(path, create=False)
    identity = os.path.basename(path).startswith("identity-")
    try:
        for sid, blob, chunks in store.load():
            if identity:
                (_, _), owner, last, bucket = pickle.loads(blob)
                Claim(owner, last, bucket, sid)
            else:
                ProtoSession.from_stored(sid, blob, chunks)
    finally:
        store.close()


def check_marker_in(directory: str, step: str, shard: int, marker: tuple) -> None:
    """Raise unless shard `shard` of `step`'s store in `directory` holds
    `marker`'s position."""
    path = store_path(directory, shard, step)
    store = SqliteStore(path, create=False)
    try:
        held = store.holds(int(marker[1]))
        check_marker(Marker(*marker), store.kind, store.token, held, f"state store {path}")
    finally:
        store.close()
