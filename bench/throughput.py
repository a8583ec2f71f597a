"""File throughput: (a) `protosessions run`, (b) a bare Bytewax flow that only
parses and re-serialises each hit, (c) the same sessionisation with Bytewax's
`SessionWindower` + `collect_window` on a prefix. Prints hits/s, peak RSS and
ratios from one run on the same data. A benchmark: it asserts nothing.

    python bench/throughput.py --hits 1000000 --clients 50000 --windower-hits 50000
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from common import HERE, OUT, hits_file, measure


def prefix(src: Path, dst: Path, n: int) -> None:
    with src.open("rb") as f, dst.open("wb") as out:
        for i, line in enumerate(f):
            if i >= n:
                break
            out.write(line)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--hits", type=int, default=1_000_000)
    ap.add_argument("--clients", type=int, default=50_000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--windower-hits", type=int, default=50_000,
                    help="prefix for (c), which is quadratic in open keys")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--dir", default=str(OUT))
    args = ap.parse_args()

    work = Path(args.dir)
    hits = hits_file(args.hits, args.clients, args.seed, work)
    py = sys.executable
    size = hits.stat().st_size
    small = work / f"prefix_{args.windower_hits}.jsonl"
    prefix(hits, small, args.windower_hits)

    runs = {
        "a protosessions run": ([py, "-m", "flows.cli", "run", "--input", str(hits),
                                 "--output", str(work / "a.jsonl"), "--dead-letter",
                                 str(work / "a.dead.jsonl"), "--workers", str(args.workers)],
                                args.hits),
        "b parse+reserialise": ([py, str(HERE / "floor_flow.py"), str(hits), str(work / "b.jsonl"),
                                 str(args.workers)], args.hits),
        "a on prefix": ([py, "-m", "flows.cli", "run", "--input", str(small),
                         "--output", str(work / "a2.jsonl"), "--dead-letter",
                         str(work / "a2.dead.jsonl")], args.windower_hits),
        "c SessionWindower on prefix": ([py, str(HERE / "windower_flow.py"), str(small),
                                         str(work / "c.jsonl")], args.windower_hits),
    }
    rates = {}
    print(f"input: {args.hits} hits, {args.clients} clients, {size / 1e6:.0f} MB; "
          f"prefix {args.windower_hits} hits; workers {args.workers}")
    print(f"{'run':32} {'hits':>9} {'seconds':>8} {'hits/s':>9} {'peak RSS MB':>12}")
    for name, (cmd, n) in runs.items():
        child = measure(cmd)
        if child.exit_code != 0:
            raise SystemExit(f"failed: {' '.join(cmd)}\n{child.stderr}")
        secs, rss = child.seconds, child.peak_rss
        rates[name] = n / secs
        print(f"{name:32} {n:9d} {secs:8.2f} {n / secs:9.0f} {rss / 1e6:12.0f}", flush=True)
        if name.startswith("a protosessions"):
            print(f"{'':32} peak RSS / input size = {rss / size:.2f}")
    print(f"(a)/(b) hits/s ratio: {rates['a protosessions run'] / rates['b parse+reserialise']:.2f}")
    print(f"(a)/(c) hits/s ratio on the prefix: "
          f"{rates['a on prefix'] / rates['c SessionWindower on prefix']:.1f}")


if __name__ == "__main__":
    main()
