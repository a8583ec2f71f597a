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
    """Streaming mode: hits drive the clock, and once none has arrived for
    `idle_us` of wall time it runs on with wall time from the last moment a
    hit moved it (SPEC rule 2).

    `mark` records that moment (call it after handling hits); `follow` moves
    the clock on by the wall time elapsed since, once the stream is idle.
    While a backlog is read, hits keep arriving and alone drive the clock, so
    a replay after a restart makes the same sessions as the first pass.
    """

    __slots__ = ("anchor_now", "anchor_wall", "idle_us")

    def __init__(self, now: int = 0, wall: int = 0, idle_us: int = 1_000_000) -> None:
        super().__init__(now)
        self.anchor_now = now
        self.anchor_wall = wall
        self.idle_us = idle_us

    def mark(self, wall: int) -> None:
        """Hits arrived at `wall`: the stream is not idle."""
        self.anchor_now = self.now
        self.anchor_wall = wall

    def wall_at(self, clock: int) -> int:
        """The wall time at which, with no hit arriving, the clock reaches `clock`."""
        if not self.anchor_wall:
            return 0
        return self.anchor_wall + max(clock - self.anchor_now, self.idle_us)

    def follow(self, wall: int) -> None:
        if not self.anchor_wall:
            self.anchor_now, self.anchor_wall = self.now, wall
        elif wall - self.anchor_wall >= self.idle_us:
            self.advance(self.anchor_now + (wall - self.anchor_wall))
