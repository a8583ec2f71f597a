"""Run the CLI, SIGKILLing the process inside its Nth state store write
(a test helper): `python tests/kill_in_snapshot.py N before|after CLI-ARGS...`.
`before`: the rows are written but not committed; `after`: committed, but
Bytewax has not yet written the snapshot that names them."""

from __future__ import annotations

import os
import signal
import sys

from flows import state_store
from flows.cli import main

calls = 0
target, when = int(sys.argv[1]), sys.argv[2]
real_write = state_store.SqliteStore.write


def write(self, changes, closed):
    global calls
    calls += 1
    if calls != target:
        return real_write(self, changes, closed)
    if when == "before":
        self.db.execute("BEGIN IMMEDIATE")
        self.db.executemany("INSERT INTO meta VALUES (?, ?, ?)",
                            [(self.last + 1, sid, blob) for sid, blob, _ in changes])
        self.db.executemany("INSERT INTO log VALUES (?, ?, x'')",
                            [(self.last + 1, sid) for sid, _, _ in changes])
        os.kill(os.getpid(), signal.SIGKILL)
    marker = real_write(self, changes, closed)
    os.kill(os.getpid(), signal.SIGKILL)
    return marker


state_store.SqliteStore.write = write
sys.exit(main(sys.argv[3:]))
