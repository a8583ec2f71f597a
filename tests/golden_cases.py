"""Loading and comparing the golden cases (tests/golden, copied from shared/golden).

What each case shows is told rule by rule in docs/semantics.md.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import orjson

from flows.cli import _run_values, build_parser
from flows.options import RunConfig

GOLDEN = Path(__file__).parent / "golden"
CASES = sorted(p.name for p in GOLDEN.iterdir() if p.is_dir())
ONE_WORKER_ONLY = {"13_late_hit_within_lateness", "14_late_hit_after_close"}


def flags(case: str) -> list[str]:
    return json.loads((GOLDEN / case / "flags.json").read_text())


def expected(case: str) -> dict[str, Any]:
    return json.loads((GOLDEN / case / "expected.json").read_text())


def hits_path(case: str) -> Path:
    return GOLDEN / case / "hits.jsonl"


def partition_of_lines(case: str) -> list[int]:
    """The partition of each line of `hits.jsonl` (golden README): from
    `partitions.json`, else every line in partition 0."""
    path = GOLDEN / case / "partitions.json"
    lines = hits_path(case).read_bytes().split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    return json.loads(path.read_text()) if path.exists() else [0] * len(lines)


def partitioned(case: str, spread: int = 0) -> list[list[tuple]]:
    """The case's `((file, line), raw)` items by partition, each in line
    order (blank lines skipped). `spread` > 0 ignores `partitions.json` and
    deals the lines round-robin over that many partitions instead."""
    name = str(hits_path(case))
    raws = hits_path(case).read_bytes().split(b"\n")
    parts_of = partition_of_lines(case)
    if spread:
        parts_of = [i % spread for i in range(len(parts_of))]
    parts: list[list[tuple]] = [[] for _ in range(max(parts_of, default=0) + 1)]
    for n, (raw, p) in enumerate(zip(raws, parts_of), 1):
        raw = raw.rstrip(b"\r")
        if raw.strip():
            parts[p].append(((name, n), raw))
    return parts


def run_config(case: str, *extra: str) -> RunConfig:
    args = build_parser().parse_args(["run", *flags(case), *extra])
    return RunConfig.from_values(_run_values(args))


def sessions_from_lines(lines: list[bytes]) -> list[dict]:
    return [orjson.loads(line) for line in lines if line.strip()]


def key_orders(value: object) -> list[list[str]]:
    """The key order of every object in `value`, depth first (iteratively:
    a hit may nest as deep as orjson reads, deeper than it writes)."""
    out, stack = [], [value]
    while stack:
        v = stack.pop()
        if isinstance(v, dict):
            out.append(list(v))
            stack.extend(v.values())
        elif isinstance(v, list):
            stack.extend(v)
    return out


def assert_sessions(case: str, got: list[dict], workers: int = 1) -> None:
    """Got == expected, in any order of sessions, every field (`metrics`
    included, close reasons exact) with its keys in the expected order.
    `workers` is ignored: every run must give the same sessions
    (golden/README.md); it stays for the callers that pass it."""
    want = {s["session_id"]: s for s in expected(case)["sessions"]}
    have = {s["session_id"]: s for s in got}
    assert len(have) == len(got), "a session_id appears twice"
    assert sorted(have) == sorted(want), f"{case}: session ids differ"
    for sid, w in want.items():
        assert have[sid] == w, f"{case}: session {sid} differs"
        # key order too, at every level (e.g. `events` in first-seen order)
        assert key_orders(have[sid]) == key_orders(w), f"{case}: session {sid}: key order differs"


def assert_dead_letters(case: str, got: list[dict]) -> None:
    want = expected(case)["dead_letters"]
    have = sorted(({"line": d["source"]["line"], "error": d["error"]} for d in got),
                  key=lambda d: d["line"])
    assert have == want
    raw_lines = hits_path(case).read_bytes().split(b"\n")
    for d in got:  # the raw text is the original line
        raw = raw_lines[d["source"]["line"] - 1].rstrip(b"\r")
        if d["raw_encoding"] == "utf-8":
            assert d["raw"].encode() == raw
        else:
            import base64
            assert base64.b64decode(d["raw"]) == raw
