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


@pytest.mark.parametrize("case", CASES)
def test_golden_as_two_processes(case: str, tmp_path) -> None:
    """Two processes of one cluster (`python -m bytewax.run`, as the pods run
    it), the case's partitions as `PROTOSESSIONS_INPUT` files: the same sessions."""
    import os
    import zlib

    files, _ = input_files(case, tmp_path)
    out = tmp_path / "sessions.jsonl"
    env = {**os.environ, "PROTOSESSIONS_INPUT": "\n".join(files), "PROTOSESSIONS_OUTPUT": str(out),
           "PROTOSESSIONS_DEAD_LETTER": "/dev/null", "BYTEWAX_DATAFLOW_API_CACHE_PATH": str(tmp_path)}
    args = list(flags(case))
    while args:  # `--session-duration 150s`, `--no-join-by-user-id`: as variables
        flag = args.pop(0)
        name, value = (flag[5:], "false") if flag.startswith("--no-") else (flag[2:], args.pop(0))
        env["PROTOSESSIONS_" + name.replace("-", "_").upper()] = value
    base = 26000 + zlib.crc32(case.encode()) % 2000
    addrs = f"127.0.0.1:{base};127.0.0.1:{base + 1}"
    procs = [subprocess.Popen([sys.executable, "-m", "bytewax.run", "flows.sessions:flow",
                               "-w", "1", "-i", str(i), "-a", addrs], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
             for i in range(2)]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err.decode()[-3000:]
    assert_sessions(case, sessions_from_lines(out.read_bytes().splitlines()))
