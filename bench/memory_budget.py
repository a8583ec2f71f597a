"""Larger than memory: `--memory-budget` far below the open hits. One process
holds every hit open (`--session-duration 24h`) with a recovery directory,
once without a budget and once per budget; it prints the RSS with every hit
open (at the end of input, before the sessions close), the state store's
size then against the budget, the wall time, and whether the sessions are
the same.

    python bench/memory_budget.py --hits 300000 --clients 10000 --budgets 4MiB

Figures only.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import OUT, ROOT, hits_file
from open_state import HOOK, OPEN, hook_figures
from protosessions.units import parse_size


def one_run(hits: Path, budget: str, work: Path) -> dict:
    rec, out = work / f"rec-{budget}", work / f"out-{budget}.jsonl"
    subprocess.run([sys.executable, "-m", "flows.cli", "recovery", "init", str(rec), "--partitions", "1"],
                   check=True, cwd=ROOT, capture_output=True)
    cmd = [sys.executable, "-c", HOOK, "run", "--input", str(hits), "--output", str(out),
           "--dead-letter", str(work / "dead.jsonl"), "--recovery-dir", str(rec),
           "--snapshot-interval", "5s", "--memory-budget", budget, *OPEN]
    start = time.monotonic()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "BENCH_RECOVERY": str(rec)})
    wall = time.monotonic() - start
    if proc.returncode != 0:
        raise SystemExit(f"run failed (budget {budget}): {proc.stderr[-2000:]}")
    rss, stored = hook_figures(proc.stderr)
    return {"open_rss": rss, "stored": stored, "wall": wall,
            "sessions": sorted(out.read_bytes().splitlines())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hits", type=int, default=300_000)
    ap.add_argument("--clients", type=int, default=10_000)
    ap.add_argument("--budgets", default="4MiB", help="comma-separated sizes")
    args = ap.parse_args()
    hits = hits_file(args.hits, args.clients)
    raw = hits.stat().st_size
    work = Path(tempfile.mkdtemp(dir=OUT))
    try:
        base = one_run(hits, "0", work)
        print(f"{args.hits} hits open ({raw / 1e6:.0f} MB raw), one process, --snapshot-interval 5s")
        print(f"{'budget':>10} {'RSS all open':>13} {'store on disk':>14} {'store/budget':>13} "
              f"{'wall':>7}  sessions")
        print(f"{'none':>10} {base['open_rss'] / 1e6:>10.0f} MB {base['stored'] / 1e6:>11.0f} MB "
              f"{'':>13} {base['wall']:>6.1f}s  {len(base['sessions'])}")
        for budget in args.budgets.split(","):
            run = one_run(hits, budget, work)
            same = "identical" if run["sessions"] == base["sessions"] else "DIFFERENT"
            ratio = run["stored"] / parse_size(budget)
            print(f"{budget:>10} {run['open_rss'] / 1e6:>10.0f} MB {run['stored'] / 1e6:>11.0f} MB "
                  f"{ratio:>12.1f}x {run['wall']:>6.1f}s  {same}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
