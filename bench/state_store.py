"""What recovery costs: wall and CPU time, and bytes written per input hit,
for a file run without recovery and with `--snapshot-interval` 1s / 5s /
30s, today's build beside an earlier one (`--before REF`, default the
commit before the state store), in one run.

    python bench/state_store.py --hits 1000000 --clients 50000
    python bench/state_store.py --hits 200000 --clients 10000 --intervals 1s,5s

Bytes written are the process's `wchar` (`/proc/self/io`: everything it
passed to write calls) less the same run's without recovery (the session
output is the same): so the recovery partitions and the state stores,
their journals included. `--session-duration 24h` keeps every hit open to
the end: bytes per hit must not grow with the open state. Figures only;
nothing is asserted (the machine is shared).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from common import OUT, ROOT, hits_file, measure

WRAP = ("import atexit, sys\n"
        "def _io():\n"
        "    with open('/proc/self/io') as f:\n"
        "        io = dict(line.split(': ') for line in f.read().splitlines())\n"
        "    sys.stderr.write('WCHAR %s\\n' % io['wchar'])\n"
        "atexit.register(_io)\n"
        "from flows.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n")


def tree(ref: str) -> Path:
    """The files of `ref`, exported once under bench/out (its CLI runs from there)."""
    sha = subprocess.run(["git", "rev-parse", "--short", ref], cwd=ROOT, check=True,
                         capture_output=True, text=True).stdout.strip()
    path = OUT / f"tree-{sha}"
    if not path.exists():
        tmp = Path(tempfile.mkdtemp(dir=OUT))
        archive = subprocess.run(["git", "archive", sha], cwd=ROOT, check=True, capture_output=True)
        subprocess.run(["tar", "-x", "-C", str(tmp)], input=archive.stdout, check=True)
        tmp.rename(path)
    return path


def run(cwd: Path, hits: Path, interval: str | None, extra: list[str]) -> tuple[float, float, int]:
    """(wall s, CPU s, wchar bytes) of one run from the tree `cwd`."""
    scratch = Path(tempfile.mkdtemp(dir=OUT))
    try:
        args = ["run", "--input", str(hits), "--output", str(scratch / "out.jsonl"),
                "--dead-letter", str(scratch / "dead.jsonl"), *extra]
        if interval:
            subprocess.run([sys.executable, "-m", "flows.cli", "recovery", "init",
                            str(scratch / "rec"), "--partitions", "2"], cwd=cwd, check=True,
                           capture_output=True)
            args += ["--recovery-dir", str(scratch / "rec"), "--snapshot-interval", interval]
        child = measure([sys.executable, "-c", WRAP, *args], cwd=cwd,
                        env={"PYTHONPATH": str(cwd), "PATH": "/usr/bin:/bin"})
        if child.exit_code != 0:
            raise SystemExit(f"run failed ({cwd.name}, {interval}): {child.stderr[-2000:]}")
        wchar = int(child.stderr.rsplit("WCHAR ", 1)[1].split()[0])
        return child.seconds, child.cpu, wchar
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hits", type=int, default=1_000_000)
    ap.add_argument("--clients", type=int, default=50_000)
    ap.add_argument("--intervals", default="1s,5s,30s")
    ap.add_argument("--before", default="4802bb7", help="git ref of the build to compare with")
    ap.add_argument("--session-duration", default=None, help="e.g. 24h: every hit stays open")
    args = ap.parse_args()
    hits = hits_file(args.hits, args.clients)
    extra = ["--session-duration", args.session_duration] if args.session_duration else []
    builds = [("before", tree(args.before)), ("after", ROOT)]
    print(f"{args.hits} hits, {hits.stat().st_size / 1e6:.0f} MB, "
          f"session duration {args.session_duration or 'default'}", flush=True)
    print(f"{'build':7} {'recovery':10} {'wall s':>8} {'CPU s':>8} {'CPU ratio':>9} "
          f"{'written MB':>11} {'B/hit':>8}", flush=True)
    for name, cwd in builds:
        wall0, cpu0, w0 = run(cwd, hits, None, extra)
        print(f"{name:7} {'none':10} {wall0:8.1f} {cpu0:8.1f} {1:9.2f} {0:11.1f} {0:8.0f}", flush=True)
        for interval in args.intervals.split(","):
            wall, cpu, w = run(cwd, hits, interval, extra)
            written = max(w - w0, 0)
            print(f"{name:7} {interval:10} {wall:8.1f} {cpu:8.1f} {cpu / cpu0:9.2f} "
                  f"{written / 1e6:11.1f} {written / args.hits:8.0f}", flush=True)


if __name__ == "__main__":
    main()
