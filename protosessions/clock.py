"""The worker clock (SPEC rule 2): the greatest hit time handled, in microseconds.

In streaming mode it also follows wall time while no hits arrive; the flow
advances it through `advance_to_wall`.
"""

from __future__ import annotations


class Clock:
    __slots__ = ("now", "__weakref__")

    def __init__(self, now: int = 0) -> None:
        self.now = now

    def advance(self, t: int) -> None:
        if t > self.now:
            self.now = t


class WallFollowingClock(Clock):
    """Streaming mode: hits drive the clock, and while none arrive it runs on
    with wall time from the last moment a hit moved it (SPEC rule 2).

    `mark` records that moment (call it after handling hits); `follow` moves
    the clock on by the wall time elapsed since. While a backlog is read the
    hits move the clock faster than the wall does, so it is driven by the hits.
    """

    __slots__ = ("anchor_now", "anchor_wall")

    def __init__(self, now: int = 0, wall: int = 0) -> None:
        super().__init__(now)
        self.anchor_now = now
        self.anchor_wall = wall

    def mark(self, wall: int) -> None:
        if self.now != self.anchor_now:
            self.anchor_now = self.now
            self.anchor_wall = wall

    def follow(self, wall: int) -> None:
        if self.anchor_wall:
            self.advance(self.anchor_now + (wall - self.anchor_wall))
        self.anchor_now, self.anchor_wall = self.now, wall
