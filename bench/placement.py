"""Where the work lands with more processes: which worker Bytewax gives each
shard's routing key, measured by running a tiny flow on N workers, and the
share of the benchmark hits each worker then handles in the identity and
the session step; for the plain names (`i0..i15`, `s0..s63`, as before)
and the names `flows.placement` chooses. A benchmark: it prints, asserts
nothing.

The busiest worker bounds the speed-up: with N workers that each do `share`
of the work, N workers are at most `1 / max share` times one. It also
prints how many of a hit's two hops cross to another process, and the
MessagePack value that carries them (bytes a hit).

    python bench/placement.py --workers 2,4,8,16 --lines 300000
"""

from __future__ import annotations

import argparse
import gc
import pickle
import time
from collections import Counter
from pathlib import Path

from common import hits_file

from flows.placement import measured_placement as placement, shard_keys
from protosessions.config import Settings
from protosessions.engine import IdentityShard, identity_shard, session_shard
from protosessions.hit import HitBatch
from protosessions.merge import PartitionReader


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--workers", default="2,4,8,16")
    ap.add_argument("--lines", type=int, default=300_000)
    args = ap.parse_args()
    settings = Settings()
    ishards, sshards = settings.identity_shards, settings.shards

    lines = []
    with Path(hits_file()).open("rb") as f:
        for i, line in enumerate(f):
            if i >= args.lines:
                break
            lines.append((i, line.rstrip(b"\n"), None))
    hits, _ = PartitionReader(settings, 0, 1).read(lines, None)
    i_load = Counter(identity_shard(h, ishards) for h in hits)
    joined = IdentityShard(settings).on_hits(hits)
    s_load = Counter(session_shard(h, sshards) for h in joined)
    n = len(hits)

    gc.set_threshold(100_000, 50, 100)  # as the job runs
    batches = [HitBatch(joined[i:i + 100]) for i in range(0, min(n, 100_000), 100)]
    t0 = time.perf_counter()
    blobs = [pickle.dumps(b) for b in batches]
    t1 = time.perf_counter()
    for blob in blobs:
        pickle.loads(blob)
    t2 = time.perf_counter()
    m = sum(map(len, batches))
    print(f"{n} hits; hit batches of 100 crossing processes: "
          f"{sum(map(len, blobs)) / m:.0f} bytes a hit, pack {(t1 - t0) / m * 1e6:.2f} us, "
          f"unpack {(t2 - t1) / m * 1e6:.2f} us a hit")
    print(f"busiest shard: identity {max(i_load.values()) / n:.3f} of the hits "
          f"(even: {1 / ishards:.3f}), session {max(s_load.values()) / n:.3f} "
          f"(even: {1 / sshards:.3f})")
    print(f"{'names':6} {'workers':>7} {'identity max share':>18} {'session max share':>17} "
          f"{'bound on speed-up':>17} {'hops crossing':>13}")
    for label, inames, snames in (
            ("plain", [f"i{i}" for i in range(ishards)], [f"s{i}" for i in range(sshards)]),
            ("chosen", list(shard_keys("i", ishards)), list(shard_keys("s", sshards)))):
        for w in (int(x) for x in args.workers.split(",")):
            where = placement(inames + snames, w)
            iw, sw = Counter(), Counter()
            for i, c in i_load.items():
                iw[where[inames[i]]] += c
            for i, c in s_load.items():
                sw[where[snames[i]]] += c
            # The keyed steps take identity 1.6 : sessions 8.1 us a hit (bench/stages.py);
            # the source is spread evenly by partitions, so the bound counts the keyed work.
            busiest = max(0.16 * iw[x] / n + 0.84 * sw[x] / n for x in range(w))
            print(f"{label:6} {w:7d} {max(iw.values()) / n:18.3f} {max(sw.values()) / n:17.3f} "
                  f"{1 / busiest:17.2f} {2 * (w - 1) / w:13.2f}", flush=True)


if __name__ == "__main__":
    main()
