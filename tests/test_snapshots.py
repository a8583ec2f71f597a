"""Session snapshots: compacted blocks and dedup ids survive a restore."""

from __future__ import annotations

import orjson

from protosessions.clock import Clock
from protosessions.config import Settings
from protosessions.engine import SessionShard
from protosessions.hit import parse_hit
from protosessions.timefmt import format_time_us

T0 = 1_735_732_800_000_000


def hits(ids: list[str], settings: Settings):
    out = []
    for i, hid in enumerate(ids):
        raw = orjson.dumps({"id": hid, "client_id": "c", "property_id": "P",
                            "server_received_time": format_time_us(T0 + i * 1_000_000),
                            "x": "y" * 50})
        out.append(parse_hit(raw, settings, None, T0 + i * 1_000_000))
    return out


def test_restore_keeps_compacted_hits_and_their_ids_for_dedup() -> None:
    s = Settings(compaction_threshold=200)  # a block every few hits
    shard = SessionShard(s, Clock())
    shard.on_hits(hits([f"h{i}" for i in range(12)], s))
    assert shard.stats["compactions"] >= 3
    snap = shard.snapshot()
    again = SessionShard(s, Clock(), snap)
    # the retries of a compacted hit and of a buffered one are still duplicates
    more = hits([f"h{i}" for i in range(14)], s)
    again.on_hits([more[0], more[11], more[12], more[13]])
    assert again.stats["duplicates"] == 2
    [(acid, data)] = again.close_all()
    session = orjson.loads(data)
    assert [h["id"] for h in session["hits"]] == [f"h{i}" for i in range(14)]
    assert session["hit_count"] == 14


def test_each_hit_is_compressed_for_a_store_once() -> None:
    """With a store, a snapshot hands it only the hits it does not hold yet."""
    from protosessions.store import MemoryStore

    s = Settings()
    store = MemoryStore()
    shard = SessionShard(s, Clock(), None, store)
    shard.on_hits(hits(["a", "b"], s))
    shard.snapshot()
    [[first]] = [c for _, c in store.chunks.items()]
    shard.snapshot()  # nothing new: no row
    assert sum(map(len, store.chunks.values())) == 1 and len(store.meta[1]) == 1
    shard.on_hits(hits(["a", "b", "c"], s)[2:])
    snap = shard.snapshot()
    [chunks] = store.chunks.values()
    assert chunks[0] == first and len(chunks) == 2  # only "c" is new
    restored = SessionShard(s, Clock(), snap, store)
    [(_, data)] = restored.close_all()
    assert [h["id"] for h in orjson.loads(data)["hits"]] == ["a", "b", "c"]


def test_a_compressed_block_holds_no_more_memory_than_its_bytes() -> None:
    """Compaction keeps blocks for as long as a proto-session is open: a
    block must not pin the compressor's worst-case buffer (zstandard's
    result alone holds several times its compressed size)."""
    import tracemalloc

    from protosessions.state import compress_hits

    hits = [(i, b'{"id":"%d","path":"/g/collect?x=%d"}' % (i, i) * 20, str(i)) for i in range(300)]
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        blocks = [compress_hits(hits) for _ in range(20)]
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert held < 2 * sum(len(b) for b in blocks) + 20 * 256
