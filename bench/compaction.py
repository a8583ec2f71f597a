"""What a compaction block costs: pickled stored hits (64 KiB and more of
them, as `--compaction-threshold` makes them) compressed and decompressed
with zlib level 1 (the codec before) and zstd level 1 (`protosessions.state`
now), on the benchmark hits. Prints microseconds a block and the size ratio.
A benchmark: it asserts nothing.

    python bench/compaction.py --blocks 200
"""

from __future__ import annotations

import argparse
import pickle
import time
import zlib

from common import hits_file

from protosessions.state import compress_hits, decompress_hits


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--blocks", type=int, default=200)
    ap.add_argument("--threshold", type=int, default=64 * 1024)
    args = ap.parse_args()
    blocks: list[list[tuple]] = []
    block: list[tuple] = []
    size = 0
    with hits_file().open("rb") as f:
        for i, line in enumerate(f):
            block.append((i, line.rstrip(b"\n"), str(i)))
            size += len(line)
            if size > args.threshold:
                blocks.append(block)
                block, size = [], 0
                if len(blocks) >= args.blocks:
                    break
    raw = sum(len(pickle.dumps(b, protocol=5)) for b in blocks)
    codecs = {
        "zlib 1 (before)": (lambda hs: zlib.compress(pickle.dumps(hs, protocol=5), 1),
                            lambda blob: pickle.loads(zlib.decompress(blob))),
        "zstd 1 (now)": (compress_hits, decompress_hits),
    }
    print(f"{len(blocks)} blocks of {args.threshold} bytes of hits or more")
    for name, (comp, decomp) in codecs.items():
        t0 = time.perf_counter()
        blobs = [comp(b) for b in blocks]
        t1 = time.perf_counter()
        for blob in blobs:
            decomp(blob)
        t2 = time.perf_counter()
        n = len(blocks)
        print(f"{name:16} compress {(t1 - t0) / n * 1e6:7.1f} us/block, decompress "
              f"{(t2 - t1) / n * 1e6:7.1f} us/block, size 1/{raw / sum(map(len, blobs)):.1f}")


if __name__ == "__main__":
    main()
