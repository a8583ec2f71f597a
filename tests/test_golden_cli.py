"""Every golden case through the `protosessions run` CLI, with 1, 2 and 3
workers. A case on several partitions (`partitions.json`) is given as one
`--input` file per partition, in partition order."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from golden_cases import (CASES, assert_dead_letters, assert_sessions, expected, flags,
                          hits_path, partitioned, sessions_from_lines)

RUNS = [(c, w) for c in CASES for w in (1, 2, 3)]


def input_files(case: str, tmp_path: Path) -> tuple[list[str], dict[tuple[str, int], int]]:
    """The `--input` files of a case and, for each `(file, line)`, its line in `hits.jsonl`."""
    parts = partitioned(case)
    if len(parts) == 1:
        path = str(hits_path(case))
        return [path], {(path, line): line for (_, line), _ in parts[0]}
    files, line_of = [], {}
    for p, items in enumerate(parts):
        path = tmp_path / f"partition-{p}.jsonl"
        path.write_bytes(b"".join(raw + b"\n" for _, raw in items))
        files.append(str(path))
        for n, ((_, line), _) in enumerate(items, 1):
            line_of[(str(path), n)] = line
    return files, line_of


@pytest.mark.parametrize("case,workers", RUNS)
def test_golden_through_cli(case: str, workers: int, tmp_path) -> None:
    out, dead = tmp_path / "sessions.jsonl", tmp_path / "dead.jsonl"
    files, line_of = input_files(case, tmp_path)
    proc = subprocess.run(
        [sys.executable, "-m", "flows.cli", "run", *(a for f in files for a in ("--input", f)),
         "--output", str(out), "--dead-letter", str(dead), "--workers", str(workers),
         *flags(case)],
        capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert_sessions(case, sessions_from_lines(out.read_bytes().splitlines()), workers)
    dls = [orjson.loads(x) for x in dead.read_bytes().splitlines()]
    for d in dls:  # as if read from hits.jsonl
        d["source"] = {"file": str(hits_path(case)),
                       "line": line_of[(d["source"]["file"], d["source"]["line"])]}
    assert_dead_letters(case, dls)
    summary = proc.stderr.strip().splitlines()[-1]
    assert f"{expected(case)['duplicates']} duplicates" in summary
    assert f"{len(dls)} dead letters" in summary
