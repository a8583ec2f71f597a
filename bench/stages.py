"""Where a hit's time goes, stage by stage, in one process without Bytewax.

Runs the library's stages one after another over the first N lines of the
benchmark file and prints microseconds per hit for each, next to the work
the floor flow (b) does per hit (orjson loads + dumps). A benchmark: it
asserts nothing. It answers "how much Python work per hit is left once
the framework costs nothing?", which bounds any flow built on this library.

    python bench/stages.py --lines 200000
"""

from __future__ import annotations

import argparse
import gc
import time
from pathlib import Path
from typing import Callable

import orjson

from common import hits_file

from protosessions.clock import Clock
from protosessions.config import Settings
from protosessions.engine import IdentityShard, SessionShard, session_shard
from protosessions.hit import Hit, parse_hit

BATCH = 1000


def timed(label: str, n: int, fn: Callable[[], object], rows: list) -> object:
    gc.collect()
    t0 = time.perf_counter()
    out = fn()
    us = (time.perf_counter() - t0) / n * 1e6
    rows.append((label, us))
    print(f"{label:44} {us:7.2f} us/hit", flush=True)
    return out


def batches(items: list, size: int = BATCH) -> list[list]:
    return [items[i:i + size] for i in range(0, len(items), size)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--input", help="hits file (default: the generated 1M-hit benchmark file)")
    ap.add_argument("--lines", type=int, default=200_000)
    args = ap.parse_args()
    gc.set_threshold(100_000, 50, 100)  # as the job runs (flows.sessions.tune_gc)

    lines: list[bytes] = []
    with (Path(args.input) if args.input else hits_file()).open("rb") as f:
        for line in f:
            lines.append(line.rstrip(b"\n"))
            if len(lines) >= args.lines:
                break
    n = len(lines)
    settings = Settings()
    rows: list = []
    print(f"{n} hits")
    def floor() -> None:
        loads, dumps = orjson.loads, orjson.dumps
        for raw in lines:
            dumps(loads(raw))

    def loads_only() -> None:
        loads = orjson.loads
        for raw in lines:
            loads(raw)
    timed("floor work: orjson loads + dumps", n, floor, rows)
    timed("  of which orjson.loads", n, loads_only, rows)

    def parse() -> list[Hit]:
        clock = Clock()
        out = []
        for raw in lines:
            hit = parse_hit(raw, settings, None, clock.now)
            clock.advance(hit.t)  # type: ignore[union-attr]
            out.append(hit)
        return out
    hits: list[Hit] = timed("parse + validate (parse_hit)", n, parse, rows)  # type: ignore[assignment]
    identity = IdentityShard(settings)
    joined: list[list[Hit]] = timed("identity joining (IdentityShard)", n,
                                    lambda: [identity.on_hits(b) for b in batches(hits)], rows)  # type: ignore[assignment]
    timed("routing to session shards", n,
          lambda: [[session_shard(h, 64) for h in b] for b in joined], rows)
    shard = SessionShard(settings, Clock())
    timed("middleware chain + closes (SessionShard)", n,
          lambda: [shard.on_hits(b) for b in joined], rows)
    timed("end of input: close the rest", n, shard.close_all, rows)
    floor = rows[0][1]
    ours = sum(us for label, us in rows[2:])
    print(f"library work {ours:.2f} us/hit (no framework, no I/O) = {ours / floor:.1f}x the floor's "
          f"loads+dumps ({floor:.2f} us/hit). (a) at 0.5x of (b) has 2x (b)'s whole per-hit "
          f"time for everything, library work included.")

if __name__ == "__main__":
    main()
