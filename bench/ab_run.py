"""Before/after of the whole job on files, in one run: `protosessions run`
of another checkout (`--base`, e.g. the commit before a change) and of this
one, and the floor flow (bench/floor_flow.py: the same source and sink, only
orjson loads + dumps per hit), interleaved round by round on the same hits.
Prints each run's wall and CPU seconds, peak RSS, the medians, the ratios
new/base and new/floor, and checks that base and new wrote the same sessions.
A benchmark: it asserts only that the outputs match.

    git worktree add /tmp/base 796c663
    python bench/ab_run.py --base /tmp/base --hits 1000000 --rounds 3
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import sys
from pathlib import Path

from common import HERE, OUT, ROOT, hits_file, measure


def digest(path: Path) -> str:
    """Order-free hash of a JSONL output (workers may interleave sessions)."""
    return hashlib.sha256(b"".join(sorted(path.read_bytes().splitlines(True)))).hexdigest()[:16]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--base", required=True, help="checkout of the baseline")
    ap.add_argument("--hits", type=int, default=1_000_000)
    ap.add_argument("--clients", type=int, default=50_000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--dir", default=str(OUT))
    ap.add_argument("run_args", nargs="*", help="extra `protosessions run` flags, after --")
    args = ap.parse_args()

    work = Path(args.dir)
    hits = hits_file(args.hits, args.clients, args.seed, work)
    size = hits.stat().st_size
    py = sys.executable

    def run(tree: Path, tag: str) -> list[str]:
        return [py, "-m", "flows.cli", "run", "--input", str(hits), "--output",
                str(work / f"ab_{tag}.jsonl"), "--dead-letter", str(work / f"ab_{tag}.dead.jsonl"),
                "--workers", str(args.workers), *args.run_args]

    runs = {
        "base": (run(Path(args.base), "base"), Path(args.base)),
        "new": (run(ROOT, "new"), ROOT),
        "floor": ([py, str(HERE / "floor_flow.py"), str(hits), str(work / "ab_floor.jsonl"),
                   str(args.workers)], ROOT),
    }
    print(f"input: {args.hits} hits, {args.clients} clients, {size / 1e6:.0f} MB; "
          f"workers {args.workers}; base {args.base}")
    print(f"{'round':>5} {'run':6} {'wall s':>7} {'cpu s':>7} {'hits/s':>8} {'peak RSS MB':>11}")
    walls: dict[str, list[float]] = {k: [] for k in runs}
    cpus: dict[str, list[float]] = {k: [] for k in runs}
    rss: dict[str, int] = {k: 0 for k in runs}
    for r in range(args.rounds):
        order = list(runs) if r % 2 == 0 else list(reversed(runs))
        for name in order:
            cmd, cwd = runs[name]
            child = measure(cmd, cwd=cwd)
            if child.exit_code != 0:
                raise SystemExit(f"failed: {' '.join(cmd)}\n{child.stderr}")
            walls[name].append(child.seconds)
            cpus[name].append(child.cpu)
            rss[name] = max(rss[name], child.peak_rss)
            print(f"{r + 1:5d} {name:6} {child.seconds:7.2f} {child.cpu:7.2f} "
                  f"{args.hits / child.seconds:8.0f} {child.peak_rss / 1e6:11.0f}", flush=True)
    med = {k: statistics.median(v) for k, v in walls.items()}
    cpu = {k: statistics.median(v) for k, v in cpus.items()}
    for k in runs:
        print(f"median {k:6} wall {med[k]:7.2f} s ({args.hits / med[k]:8.0f} hits/s), "
              f"cpu {cpu[k]:7.2f} s, peak RSS {rss[k] / 1e6:.0f} MB")
    print(f"new/base speed: wall {med['base'] / med['new']:.2f}x, cpu {cpu['base'] / cpu['new']:.2f}x")
    print(f"speed / floor's: base {med['floor'] / med['base']:.2f}, new {med['floor'] / med['new']:.2f} "
          f"(wall); base {cpu['floor'] / cpu['base']:.2f}, new {cpu['floor'] / cpu['new']:.2f} (cpu)")
    print(f"peak RSS / input size: base {rss['base'] / size:.2f}, new {rss['new'] / size:.2f}")
    same = digest(work / "ab_base.jsonl") == digest(work / "ab_new.jsonl")
    print("sessions: base and new identical" if same else "sessions: MISMATCH between base and new")


if __name__ == "__main__":
    main()
