"""One object per OS thread, kept for the thread's whole life.

`threading.local` keeps its values in the Python thread state, and a thread
that Python did not start (a Bytewax worker under `bytewax.run` or
`cluster_main`: a Rust thread) gets a new thread state each time it takes
the GIL, so its locals were gone at the next call: every batch built a new
router, a new stats counter (kept forever in the totals list) and new zstd
contexts. The OS thread's id does not change between calls.
"""

from __future__ import annotations

import threading
from typing import Callable, Generic, TypeVar

T = TypeVar("T")


class PerThread(Generic[T]):
    """`get()` returns this OS thread's object, made by `make` on its first call."""

    def __init__(self, make: Callable[[], T]) -> None:
        self._make = make
        self._by_thread: dict[int, T] = {}
        self._lock = threading.Lock()

    def get(self) -> T:
        v = self._by_thread.get(threading.get_ident())
        if v is None:
            v = self._make()
            with self._lock:
                v = self._by_thread.setdefault(threading.get_ident(), v)
        return v

    def values(self) -> list[T]:
        """Every thread's object so far (a thread's stays after it ends)."""
        with self._lock:
            return list(self._by_thread.values())
