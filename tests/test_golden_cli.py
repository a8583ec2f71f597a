"""Every golden case through the `protosessions run` CLI, with 1 and 2 workers."""

from __future__ import annotations

import subprocess
import sys

import orjson
import pytest

from golden_cases import (CASES, ONE_WORKER_ONLY, assert_dead_letters, assert_sessions,
                          expected, flags, hits_path, sessions_from_lines)


# Out-of-order cases bind one-worker runs only (golden/README.md).
RUNS = [(c, w) for c in CASES for w in (1, 2) if w == 1 or c not in ONE_WORKER_ONLY]


@pytest.mark.parametrize("case,workers", RUNS)
def test_golden_through_cli(case: str, workers: int, tmp_path) -> None:
    out, dead = tmp_path / "sessions.jsonl", tmp_path / "dead.jsonl"
    proc = subprocess.run(
        [sys.executable, "-m", "protosessions.cli", "run", "--input", str(hits_path(case)),
         "--output", str(out), "--dead-letter", str(dead), "--workers", str(workers),
         *flags(case)],
        capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert_sessions(case, sessions_from_lines(out.read_bytes().splitlines()), workers)
    dls = [orjson.loads(x) for x in dead.read_bytes().splitlines()]
    assert_dead_letters(case, dls)
    for d in dls:
        assert d["source"]["file"] == str(hits_path(case))
    summary = proc.stderr.strip().splitlines()[-1]
    assert f"{expected(case)['duplicates']} duplicates" in summary
    assert f"{len(dls)} dead letters" in summary
