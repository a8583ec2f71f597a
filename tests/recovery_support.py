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
