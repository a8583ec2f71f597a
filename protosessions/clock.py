"""The worker clock (SPEC rule 2): the greatest hit time handled, in microseconds.

In streaming mode it also follows wall time while no hits arrive; the flow
advances it through `advance_to_wall`.
"""

from __future__ import annotations


class Clock:
    __slots__ = ("now",)

    def __init__(self, now: int = 0) -> None:
        self.now = now

    def advance(self, t: int) -> None:
        if t > self.now:
            self.now = t
