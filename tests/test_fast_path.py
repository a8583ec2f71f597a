"""The session shard's fast path for "append to an open proto-session"
(issue 13) against the middleware chain it stands for: the same sessions,
byte for byte and in the same order, the same counters and the same state."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protosessions.config import Settings
from protosessions.engine import Engine
from protosessions.middlewares import with_append_fast_path
from protosessions.middlewares.close_trigger import CloseTrigger
from test_properties import S, cases

MANY = settings(max_examples=150, deadline=None, derandomize=True, database=None,
                suppress_health_check=list(HealthCheck))


def _run(s: Settings, lines: list[bytes], fast: bool) -> tuple:
    eng = Engine(s, future_check=False)
    ctx = eng.sessions.ctx
    if not fast:
        ctx.entry = ctx._build_chain(ctx.store)
    assert (getattr(ctx.entry, "__name__", None) == "append") is fast
    out = list(eng.feed(lines, "gen.jsonl"))
    snap = eng.sessions.snapshot()
    out.extend(eng.finish())
    return out, snap, dict(eng.sessions.stats), [d.reason for d in eng.dead_letters]


@MANY
@given(cases(allow_bad=True), st.sampled_from([0, 1, 300, 10**6]), st.sampled_from([0, 1, 5 * S]))
def test_fast_path_equals_the_chain(case, compaction: int, tick: int) -> None:
    s, lines, _ = case
    s = replace(s, compaction_threshold=compaction, tick_interval_us=tick)
    assert _run(s, lines, True) == _run(s, lines, False)


def test_fast_path_only_for_the_default_chain() -> None:
    eng = Engine(Settings())
    ctx = eng.sessions.ctx
    ctx.middlewares = ctx.middlewares[:1]
    assert isinstance(ctx.middlewares[0], CloseTrigger)
    assert with_append_fast_path(ctx) is ctx.entry


def _join(s: Settings, lines: list[bytes], batch: int, fast: bool) -> tuple:
    """An identity shard on the valid hits of `lines`, in batches of `batch`,
    ticking between batches: what each hit leaves with, and the claims."""
    from protosessions.engine import IdentityShard
    from protosessions.merge import PartitionReader

    hits, _ = PartitionReader(s, 0, 1).read([(i, raw, ("f", i)) for i, raw in enumerate(lines)], None)
    shard = IdentityShard(s)
    shard.fast = fast
    left = []
    for i in range(0, len(hits), batch):
        out = shard.on_hits(hits[i:i + batch])
        left += [(h.id, h.acid, h.key, h.clock) for h in out]
        shard.tick(hits[i].clock)
    shard.tick(shard.table.clock + 10 * s.session_duration_us)
    return left, shard.snapshot(), shard.empty


@MANY
@given(cases(allow_bad=True), st.sampled_from([1, 3, 50]), st.sampled_from([0, 1, 5 * S]))
def test_identity_batch_loop_equals_the_chain(case, batch: int, tick: int) -> None:
    s, lines, _ = case
    s = replace(s, tick_interval_us=tick, eviction_strategy="rewrite")
    assert _join(s, lines, batch, True) == _join(s, lines, batch, False)


def test_identity_batch_loop_only_for_rewrite() -> None:
    from protosessions.engine import IdentityShard

    assert IdentityShard(Settings()).fast
    assert not IdentityShard(Settings(eviction_strategy="evict")).fast
