"""What session metrics cost: `protosessions run` with `--session-hits full`,
`ids` and `none`, against the same run of a commit from before the metrics
(default 2306dc5, unpacked with `git archive` and run
through its own CLI module), on the same generated file, in one run.

Prints, per variant, over `--repeats` interleaved runs: the median of the
run's own hits/s (its summary line: input to last session, no interpreter
start-up), hits per CPU second of the whole process in its best run (CPU
time is steadier than wall time on a shared machine, and other load only
ever adds to it), the median wall time, the output bytes per hit, and the
change against the base. A benchmark: it asserts nothing.

    python bench/session_metrics.py --hits 200000 --clients 10000 --seed 7
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
from pathlib import Path

from common import OUT, ROOT, hits_file, measure

SUMMARY_RATE = re.compile(r"(\d+) hits/s\s*$")


def base_tree(commit: str, directory: Path) -> Path:
    """The source tree of `commit`, unpacked once (no worktree to clean up)."""
    tree = directory / f"base-{commit}"
    if not (tree / "protosessions").is_dir():
        tree.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", commit],
                                 check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
    return tree


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hits", type=int, default=200_000)
    ap.add_argument("--clients", type=int, default=10_000)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--base", default="2306dc5", help="commit without metrics to compare with")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--dir", default=str(OUT))
    args = ap.parse_args()

    work = Path(args.dir)
    hits = hits_file(args.hits, args.clients, args.seed, work)
    base = base_tree(args.base, work)
    variants = {f"base {args.base} (no metrics)": (base, [])}
    for mode in ("full", "ids", "none"):
        variants[f"--session-hits {mode}"] = (ROOT, ["--session-hits", mode])

    rates: dict[str, list[float]] = {name: [] for name in variants}
    walls: dict[str, list[float]] = {name: [] for name in variants}
    cpus: dict[str, list[float]] = {name: [] for name in variants}
    out_bytes: dict[str, int] = {}
    for _ in range(args.repeats):  # interleaved, so drift hits every variant alike
        for i, (name, (tree, extra)) in enumerate(variants.items()):
            out = work / f"metrics_{i}.jsonl"
            cli = "flows.cli" if (tree / "flows" / "cli.py").exists() else "protosessions.cli"
            cmd = [sys.executable, "-m", cli, "run", "--input", str(hits),
                   "--output", str(out), "--dead-letter", str(work / f"metrics_{i}.dead.jsonl"),
                   "--workers", str(args.workers), *extra]
            child = measure(cmd, cwd=tree)
            if child.exit_code != 0:
                raise SystemExit(f"failed: {' '.join(cmd)}\n{child.stderr}")
            summary = child.stderr.strip().splitlines()[-1]
            rates[name].append(float(SUMMARY_RATE.search(summary).group(1)))
            walls[name].append(child.seconds)
            cpus[name].append(child.cpu)
            out_bytes[name] = out.stat().st_size

    print(f"input: {hits.name}, {args.hits} hits, {hits.stat().st_size / args.hits:.0f} bytes/hit;"
          f" workers {args.workers}; median of {args.repeats} runs each")
    print(f"{'variant':28} {'run hits/s':>10} {'vs base':>8} {'hits/CPU s best':>15} {'vs base':>8}"
          f" {'wall s':>7} {'out bytes/hit':>14} {'vs base':>8}")
    base_name = next(iter(variants))
    b_rate, b_cpu = statistics.median(rates[base_name]), args.hits / min(cpus[base_name])
    b_bytes = out_bytes[base_name] / args.hits
    for name in variants:
        rate, cpu = statistics.median(rates[name]), args.hits / min(cpus[name])
        per_hit = out_bytes[name] / args.hits
        print(f"{name:28} {rate:10.0f} {rate / b_rate - 1:+8.1%} {cpu:15.0f} {cpu / b_cpu - 1:+8.1%}"
              f" {statistics.median(walls[name]):7.2f} {per_hit:14.1f} {per_hit / b_bytes - 1:+8.1%}")
    for label, table in (("run hits/s", rates), ("CPU s", cpus)):
        print(f"every run, {label}: " + "; ".join(
            f"{name}: {', '.join(f'{r:.2f}' if r < 1000 else f'{r:.0f}' for r in rs)}"
            for name, rs in table.items()))


if __name__ == "__main__":
    main()
