"""What the crash tests read of a recovery store (a test helper)."""

from __future__ import annotations

import sqlite3
from pathlib import Path


def last_epoch(store: Path) -> int:
    """The newest snapshot epoch in a recovery store (-1: none yet)."""
    newest = -1
    for part in store.glob("part-*.sqlite3"):
        try:
            with sqlite3.connect(f"file:{part}?mode=ro", uri=True, timeout=5) as db:
                (epoch,) = db.execute("SELECT MAX(snap_epoch) FROM snaps").fetchone()
        except sqlite3.OperationalError:  # being written just now: ask again later
            continue
        if epoch is not None:
            newest = max(newest, epoch)
    return newest


def read_back(rec: Path) -> bool:
    """Whether a state store was indexed to read hits back (`SqliteStore.read`):
    a memory budget moved hits out of RAM."""
    found = False
    for path in (rec / "state").glob("*.sqlite3"):
        db = sqlite3.connect(path)
        found |= db.execute("SELECT 1 FROM sqlite_master WHERE name = 'log_sid'").fetchone() is not None
        db.close()
    return found
