"""RAM against open hits: RSS of one process (`protosessions run`, no
recovery) holding every hit open to the end (`--session-duration 24h`),
taken at the end of input before the sessions close (and the run's peak,
reached as every session closes at once and its output is built), for
a few input sizes, `--session-hits full` and `none`, today's build beside
an earlier one (`--before REF`), in one run; the slope per open hit against
the raw bytes of a hit, and a PNG plot (`--plot`, default
docs/open_state.png).

    python bench/open_state.py --sizes 100000,300000,1000000
    python bench/open_state.py --sizes 30000,100000,300000 --clients 10000

RSS includes the interpreter, Bytewax and the reading of the input: the
slope between sizes is the cost of an open hit. Figures only.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

from common import OUT, ROOT, hits_file, measure
from png_plot import line_plot
from state_store import tree

OPEN = ["--session-duration", "24h", "--max-duration", "48h", "--max-events", "100000000"]


# Run in the child: the RSS and the state store's size when the input has
# ended, as the first shard starts closing its sessions (an outside sampler
# would see the close of every session at once, which builds their output).
HOOK = """
import gc, os, sys
import protosessions.engine as engine
from flows.cli import main
close_all, seen = engine.SessionShard.close_all, []
def hooked(self):
    if not seen:
        seen.append(1)
        gc.collect()
        rss = int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        state = os.path.join(os.environ.get("BENCH_RECOVERY", "-"), "state")
        stored = sum(os.path.getsize(os.path.join(state, f)) for f in os.listdir(state)) if os.path.isdir(state) else 0
        print(f"BENCH {rss} {stored}", file=sys.stderr)
    return close_all(self)
engine.SessionShard.close_all = hooked
sys.exit(main(sys.argv[1:]))
"""


def hook_figures(stderr: str) -> tuple[int, int]:
    """(RSS, state store bytes) the hook printed."""
    [line] = [x for x in stderr.splitlines() if x.startswith("BENCH ")]
    _, rss, stored = line.split()
    return int(rss), int(stored)


def open_and_peak_rss(cwd: Path, hits: Path, mode: str, extra: list[str]) -> tuple[int, int]:
    """RSS with every hit open (at the end of input) and the run's peak."""
    scratch = Path(tempfile.mkdtemp(dir=OUT))
    try:
        child = measure([sys.executable, "-c", HOOK, "run", "--input", str(hits),
                         "--output", str(scratch / "out.jsonl"), "--dead-letter",
                         str(scratch / "dead.jsonl"), "--session-hits", mode, *OPEN, *extra],
                        cwd=cwd, env={"PYTHONPATH": str(cwd), "PATH": "/usr/bin:/bin"})
        if child.exit_code != 0:
            raise SystemExit(f"run failed ({cwd.name} {mode}): {child.stderr[-2000:]}")
        return hook_figures(child.stderr)[0], child.peak_rss
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="100000,300000,1000000")
    ap.add_argument("--clients", type=int, default=50_000)
    ap.add_argument("--before", default="4802bb7", help="git ref of the build to compare with")
    ap.add_argument("--modes", default="full,none")
    ap.add_argument("--extra", default="", help="more `run` arguments for both builds")
    ap.add_argument("--plot", default=str(ROOT / "docs" / "open_state.png"))
    ap.add_argument("--after-only", action="store_true", help="skip the earlier build")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    extra = args.extra.split()
    files = {n: hits_file(n, min(args.clients, n // 5)) for n in sizes}
    raw = {n: files[n].stat().st_size / n for n in sizes}
    builds = [("before", tree(args.before)), ("after", ROOT)]
    if args.after_only:
        builds = builds[1:]
    series: dict[str, list[tuple[float, float]]] = {}
    print(f"{'build':7} {'mode':5} {'open hits':>10} {'RSS MB':>8} {'B/open hit':>11} "
          f"{'x raw':>6} {'peak MB':>8}", flush=True)
    for name, cwd in builds:
        for mode in args.modes.split(","):
            points = []
            for n in sizes:
                rss, peak = open_and_peak_rss(cwd, files[n], mode, extra)
                points.append((n, rss))
                slope = " " * 18
                if len(points) > 1:
                    (n0, r0), (n1, r1) = points[-2], points[-1]
                    per = (r1 - r0) / (n1 - n0)
                    slope = f"{per:11.0f} {per / raw[n]:6.2f}"
                print(f"{name:7} {mode:5} {n:10} {rss / 1e6:8.0f} {slope} {peak / 1e6:8.0f}",
                      flush=True)
            series[f"{name} {mode}"] = [(n / 1000, r / 1e6) for n, r in points]
    print(f"raw bytes per hit: {', '.join(f'{raw[n]:.0f}' for n in sizes)}")
    if args.plot and line_plot(Path(args.plot), series, "open hits (thousands)",
                               "RSS, every hit open (MB)", "RSS against open hits"):
        print(f"plot: {args.plot}")


if __name__ == "__main__":
    main()
