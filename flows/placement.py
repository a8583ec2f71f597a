"""Names for the shards of the keyed steps that Bytewax spreads evenly.

Bytewax gives a keyed item to worker `SipHash-1-3(key) % workers` (Rust's
`DefaultHasher`, keys 0, over the key's UTF-8 bytes and a 0xFF byte). With
64 shards named `s0..s63` that is a throw of 64 balls into the workers: on
16 workers the busiest got 2.4 times its share (`bench/placement.py`), and
the busiest worker paces the whole job. So shard `i` is given the first of
the names `s<i>`, `s<i>.1`, `s<i>.2`, ... whose hash is `i` modulo `R` (the
largest power of two up to the shard count, at most 64): on any worker
count that divides `R` (1, 2, 4, ..., 64 processes) every worker then holds
the same number of shards. The names depend only on the shard count, so
every process and every resumed run computes the same ones.
"""

from __future__ import annotations

from functools import lru_cache

_M64 = (1 << 64) - 1
MAX_SPREAD = 64  # R at most this; more shards than SEARCHED keep plain names
SEARCHED = 1024  # above this many shards the plain names spread well enough


def _rotl(x: int, b: int) -> int:
    return ((x << b) | (x >> (64 - b))) & _M64


def _sipround(v0: int, v1: int, v2: int, v3: int) -> tuple[int, int, int, int]:
    v0 = (v0 + v1) & _M64
    v1 = _rotl(v1, 13) ^ v0
    v0 = _rotl(v0, 32)
    v2 = (v2 + v3) & _M64
    v3 = _rotl(v3, 16) ^ v2
    v0 = (v0 + v3) & _M64
    v3 = _rotl(v3, 21) ^ v0
    v2 = (v2 + v1) & _M64
    v1 = _rotl(v1, 17) ^ v2
    v2 = _rotl(v2, 32)
    return v0, v1, v2, v3


def siphash13(data: bytes) -> int:
    """SipHash-1-3 with keys (0, 0): what Rust's `DefaultHasher` computes."""
    v0, v1 = 0x736F6D6570736575, 0x646F72616E646F6D
    v2, v3 = 0x6C7967656E657261, 0x7465646279746573
    n = len(data)
    end = n - n % 8
    for i in range(0, end, 8):
        m = int.from_bytes(data[i:i + 8], "little")
        v3 ^= m
        v0, v1, v2, v3 = _sipround(v0, v1, v2, v3)
        v0 ^= m
    last = ((n & 0xFF) << 56) | int.from_bytes(data[end:], "little")
    v3 ^= last
    v0, v1, v2, v3 = _sipround(v0, v1, v2, v3)
    v0 ^= last
    v2 ^= 0xFF
    for _ in range(3):
        v0, v1, v2, v3 = _sipround(v0, v1, v2, v3)
    return v0 ^ v1 ^ v2 ^ v3


def bytewax_hash(key: str) -> int:
    """Rust's hash of a `str` key: SipHash-1-3 of its bytes and a 0xFF byte."""
    return siphash13(key.encode() + b"\xff")


def bytewax_worker(key: str, workers: int) -> int:
    """The worker Bytewax 0.21 gives a key of a keyed step."""
    return bytewax_hash(key) % workers


def measured_placement(keys: list[str], workers: int) -> dict[str, int]:
    """The worker Bytewax itself gives each key, found by running a tiny
    keyed flow on `workers` worker threads (to check `bytewax_worker`, and
    for `bench/placement.py`): a dynamic sink writes on the worker of the
    step before it."""
    import bytewax.operators as op
    from bytewax.dataflow import Dataflow
    from bytewax.outputs import DynamicSink, StatelessSinkPartition
    from bytewax.testing import TestingSource, cluster_main

    seen: dict[str, int] = {}

    class Where(StatelessSinkPartition):
        def __init__(self, worker: int) -> None:
            self.worker = worker

        def write_batch(self, items: list) -> None:
            for key in items:
                seen[key] = self.worker

    class WhereSink(DynamicSink):
        def build(self, step_id: str, worker_index: int, worker_count: int) -> Where:
            return Where(worker_index)

    flow = Dataflow("placement")
    keyed = op.key_on("key", op.input("in", flow, TestingSource(keys)), lambda k: k)
    out = op.stateful_map("where", keyed, lambda state, v: (state, v))
    op.output("out", op.map("k", out, lambda kv: kv[0]), WhereSink())
    cluster_main(flow, addresses=[], proc_id=0, worker_count_per_proc=workers)
    return seen


@lru_cache(maxsize=None)
def shard_keys(prefix: str, shards: int) -> tuple[str, ...]:
    """The routing key of each shard of a step (see the module docstring)."""
    if shards > SEARCHED:
        return tuple(f"{prefix}{i}" for i in range(shards))
    spread = 1
    while spread * 2 <= min(shards, MAX_SPREAD):
        spread *= 2
    names = []
    for i in range(shards):
        name, n = f"{prefix}{i}", 0
        while bytewax_hash(name) % spread != i % spread:
            n += 1
            name = f"{prefix}{i}.{n}"
        names.append(name)
    return tuple(names)
