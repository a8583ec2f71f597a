"""Helpers for tests of the engine (the Go package's `do_tick` / `stop_close_trigger`)."""

from __future__ import annotations

from .middleware import Context
from .middlewares.close_trigger import CloseTrigger


def do_tick(ctx: Context, ts: int) -> None:
    """Move the clock to `ts` (microseconds) and run one tick of the wheel."""
    ctx.clock.advance(ts)
    ctx.state.clock = max(ctx.state.clock, ts)
    ctx.ping(ctx.clock.now)


def stop_close_trigger(ctx: Context) -> None:
    """Stop clock-driven closes in this context (hit-driven closes go on)."""
    for mw in ctx.middlewares:
        if isinstance(mw, CloseTrigger):
            mw.on_ping = lambda ctx, ts: None  # type: ignore[method-assign]
