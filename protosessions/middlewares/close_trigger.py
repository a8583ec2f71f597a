"""Close trigger: inactivity, hard caps and the clock-driven timing wheel (SPEC rules 3, 4)."""

from __future__ import annotations

from ..config import Settings
from ..hit import Hit
from ..middleware import BaseMiddleware, Context, Next
from ..state import ProtoSession

INACTIVITY = "inactivity"
MAX_EVENTS = "max_events"
MAX_DURATION = "max_duration"
END_OF_INPUT = "end_of_input"


class CloseTrigger(BaseMiddleware):
    """Decides, as each hit is handled, whether its proto-session is over, and
    closes proto-sessions the clock has expired.

    A hit closes its open proto-session when that one has expired by the
    clock the hit was read at, when the hit comes `session_duration` after the
    latest hit, or `max_duration` after the first. After the hit is stored, a
    proto-session holding `max_events` hits closes at once.

    The clock closes a proto-session once `clock - allowed_lateness >=
    latest + session_duration` *and* the clock has moved past the time at
    which its last hit was handled: a late hit opening an already-expired
    proto-session is not closed by the very clock it arrived at (as the Go
    wheel never goes back to a bucket it already processed). Each open
    proto-session is filed in the wheel bucket of that moment; `on_ping`
    closes the buckets the clock has passed, so a close is emitted at most
    one tick late, and `end_reason` names the reason the clock alone would
    give, so the tick interval never changes a session.
    """

    def __init__(self, settings: Settings) -> None:
        self.duration = settings.session_duration_us
        self.lateness = settings.allowed_lateness_us
        self.max_duration = settings.max_duration_us
        self.max_events = settings.max_events
        self.tick = settings.tick_us

    def handle(self, ctx: Context, hit: Hit, next: Next) -> None:
        key = hit.key
        sessions = ctx.sessions
        ps = sessions.get(key)
        if ps is not None:
            last = ps.last_t
            if hit.t - last >= self.duration or hit.clock - self.lateness >= last + self.duration:
                ctx.close(key, INACTIVITY)
            elif hit.t - ps.first_t >= self.max_duration:
                ctx.close(key, MAX_DURATION)
        next(hit)
        ps = sessions.get(key)
        if ps is None:
            return
        if ps.count >= self.max_events:
            ctx.close(key, MAX_EVENTS)
            return
        expires = ps.last_t + self.duration + self.lateness  # = expires_at(ps), inlined
        if ps.seen_clock >= expires:
            expires = ps.seen_clock + 1
        bucket = expires // self.tick
        if bucket != ps.bucket:
            ctx.state.schedule(key, ps, bucket)

    def expires_at(self, ps: ProtoSession) -> int:
        """The first clock value at which the clock alone closes `ps`."""
        return max(ps.last_t + self.duration + self.lateness, ps.seen_clock + 1)

    def on_ping(self, ctx: Context, ts: int) -> None:
        """Close every proto-session whose expiry bucket the clock has passed."""
        for key in list(ctx.state.due(ts // self.tick)):
            ctx.close(key, INACTIVITY)

    def end_reason(self, ps: ProtoSession, clock: int) -> str:
        """Reason to close `ps` when the input ends at `clock`."""
        return INACTIVITY if clock >= self.expires_at(ps) else END_OF_INPUT
