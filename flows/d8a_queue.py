"""d8a's filesystem queue (SPEC "The d8a form"): what its receiver writes
and its worker consumes.

A queue is a directory of `<unix nanoseconds>.task` files (d8a writes each
as `.tmp`, then renames it, so a `.task` file is whole once it is there),
each one message: 1 byte `n`, `n` bytes of type (`process-hits`), a 2-byte
big-endian length `m`, `m` bytes of JSON headers (`{"is-ping": "true"}`
marks a ping), then the body: gzip of the JSON `{"Hits": [hit, ...]}`.
`read_task` decodes one such file into its hits, each the JSON bytes of one
element of `Hits` exactly as d8a wrote them (Go escapes `<`, `>` and `&`;
re-serialising would change the bytes a session writes back). Anything
else raises `BadTask` with one line saying why, for the bridge to move the
file aside.
"""

from __future__ import annotations

import os
import re
import zlib
from dataclasses import dataclass
from pathlib import Path

import orjson

TASK_TYPE = b"process-hits"
SUFFIX = ".task"
REJECTED = "rejected"  # the folder, inside the queue, that files that are no task go to
MAX_BODY = 256 * 1024 * 1024  # inflated body bytes past which a task is refused (a gzip bomb)


class BadTask(ValueError):
    """A file that is not one message of d8a's queue; the text is one line."""


@dataclass(frozen=True)
class Task:
    """One decoded task: a ping carries no hits."""

    ping: bool
    hits: list[bytes]


def read_task(data: bytes) -> Task:
    """Decode the bytes of one `.task` file (`BadTask` unless it is one)."""
    if not data:
        raise BadTask("empty file")
    n = data[0]
    if len(data) < 1 + n + 2:
        raise BadTask(f"truncated: {len(data)} bytes, too short for its type and header length")
    kind = data[1:1 + n]
    if kind != TASK_TYPE:
        raise BadTask(f"type {kind.decode('utf-8', 'replace')!r} is not "
                      f"{TASK_TYPE.decode()!r}")
    m = int.from_bytes(data[1 + n:3 + n], "big")
    start = 3 + n + m
    if start > len(data):
        raise BadTask(f"header length {m} runs past the end of the file ({len(data)} bytes)")
    try:
        headers = orjson.loads(data[3 + n:start])
    except orjson.JSONDecodeError:
        headers = None
    if not isinstance(headers, dict):
        raise BadTask("headers are not a JSON object")
    if headers.get("is-ping") == "true":
        return Task(True, [])
    body = _gunzip(data[start:])
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise BadTask("body is not JSON") from None
    if not isinstance(obj, dict) or not isinstance(obj.get("Hits"), list):
        raise BadTask('body is not the JSON {"Hits": [...]}')
    hits = _elements(body)
    if len(hits) != len(obj["Hits"]):  # not expected: then the hits as orjson writes them
        hits = [orjson.dumps(h) for h in obj["Hits"]]
    return Task(False, hits)


def _gunzip(data: bytes) -> bytes:
    """Every gzip member of `data`, inflated (as Go's `gzip.Reader` reads
    them), at most `MAX_BODY` bytes; `BadTask` when it is not gzip, is cut
    short, or has bytes after its last member that are no gzip member."""
    if not data:
        raise BadTask("no body")
    out: list[bytes] = []
    size = 0
    while data:
        d = zlib.decompressobj(wbits=31)
        try:
            chunk = d.decompress(data, MAX_BODY - size + 1)
        except zlib.error:
            raise BadTask("body is not gzip" if not out else "bytes after the gzip body "
                          "are not gzip") from None
        size += len(chunk)
        if size > MAX_BODY:
            raise BadTask(f"body inflates past {MAX_BODY} bytes")
        if not d.eof:
            raise BadTask("gzip body is truncated")
        out.append(chunk)
        data = d.unused_data
    return b"".join(out)


_TOKEN = re.compile(rb'"(?:[^"\\]|\\.)*"|[][{},:]')
_WS = b" \t\r\n"


def _elements(body: bytes) -> list[bytes]:
    """The bytes of each element of the top-level `Hits` array of valid
    JSON `body` (its last `Hits`, as a JSON reader keeps the last of a
    repeated key), whitespace around each trimmed."""
    depth = 0
    expect_key = False
    in_hits = False  # the key just read at depth 1 is "Hits"
    spans: list[tuple[int, int]] = []
    current: list[tuple[int, int]] = []
    item_start = -1
    for m in _TOKEN.finditer(body):
        tok = m.group()
        c = tok[0]
        if c == 0x22:  # a string
            if depth == 1 and expect_key:
                expect_key = False
                in_hits = orjson.loads(tok) == "Hits"
            continue
        if c in b"[{":
            if depth == 1 and in_hits and c == 0x5B:  # [ : the Hits array opens
                current, item_start = [], m.end()
            depth += 1
            expect_key = depth == 1
        elif c in b"]}":
            if depth == 2 and in_hits and item_start >= 0:  # the Hits array closes
                if body[item_start:m.start()].strip(_WS):
                    current.append((item_start, m.start()))
                spans, item_start, in_hits = current, -1, False
            depth -= 1
        elif c == 0x2C:  # ,
            if depth == 2 and in_hits and item_start >= 0:
                current.append((item_start, m.start()))
                item_start = m.end()
            elif depth == 1:
                expect_key, in_hits = True, False
    return [body[a:b].strip(_WS) for a, b in spans]


def task_names(queue: Path) -> list[str]:
    """The queue's `.task` files, in name order (the order d8a wrote them)."""
    names = []
    with os.scandir(queue) as entries:
        for e in entries:
            if e.name.endswith(SUFFIX) and e.is_file(follow_symlinks=False):
                names.append(e.name)
    names.sort()
    return names


def move_aside(queue: Path, name: str) -> Path:
    """Move a file that is no task into `queue/rejected/` (never deleted; a
    name already there gets a numbered suffix). Returns where it went."""
    folder = queue / REJECTED
    folder.mkdir(exist_ok=True)
    target = folder / name
    n = 1
    while target.exists():
        target = folder / f"{name}.{n}"
        n += 1
    os.replace(queue / name, target)
    return target
