"""JSONL file input and output that resume by byte offset."""

from __future__ import annotations

import os
import secrets
import stat
import sys
from contextlib import contextmanager
from typing import BinaryIO, Iterable, Iterator, Optional

from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from bytewax.outputs import FixedPartitionedSink, StatefulSinkPartition

Located = tuple  # ((file, line), raw bytes)


class _LinesPartition(StatefulSourcePartition[Located, Optional[tuple]]):
    """Reads the file in large chunks and splits lines itself: a `readline`
    call per hit costs more than the rest of the source."""

    CHUNK = 1 << 20

    def __init__(self, path: str, batch_size: int, resume: Optional[tuple]) -> None:
        self._path = path
        self._stdin = path == "-"
        self._f: BinaryIO = sys.stdin.buffer if self._stdin else open(path, "rb")
        self._line = 0
        self._offset = 0  # file offset of the first byte not yet emitted
        self._pending: list[bytes] = []  # complete lines read but not emitted
        self._tail = b""  # an incomplete last line
        self._batch = batch_size
        self._eof = False
        if resume is not None and not self._stdin:
            self._offset, self._line = resume
            self._f.seek(self._offset)

    def _fill(self) -> None:
        chunk = self._f.read(self.CHUNK)
        if not chunk:
            self._eof = True
            if self._tail:
                self._pending.append(self._tail)
                self._tail = b""
            return
        lines = (self._tail + chunk).split(b"\n")
        self._tail = lines.pop()
        self._pending.extend(lines)

    def next_batch(self) -> Iterable[Located]:
        while len(self._pending) < self._batch and not self._eof:
            self._fill()
        if not self._pending and self._eof:
            raise StopIteration()
        take = self._pending[:self._batch]
        del self._pending[:self._batch]
        name = self._path
        line = self._line
        out = []
        size = 0
        for raw in take:
            line += 1
            size += len(raw) + 1
            if raw[-1:] == b"\r":
                raw = raw[:-1]
            if raw.strip():
                out.append(((name, line), raw))
        self._line = line
        self._offset += size
        return out

    def snapshot(self) -> Optional[tuple]:
        return None if self._stdin else (self._offset, self._line)

    def close(self) -> None:
        if not self._stdin:
            self._f.close()


class JsonlSource(FixedPartitionedSource[Located, Optional[tuple]]):
    """Lines of one file (or stdin) as `((path, line number), raw bytes)`,
    blank lines skipped but counted. Resumes at the snapshotted offset."""

    def __init__(self, path: str, batch_size: int = 2000) -> None:
        self.path = path
        self.batch_size = batch_size

    def list_parts(self) -> list[str]:
        return [self.path]

    def build_part(self, step_id: str, for_part: str, resume_state: Optional[tuple]) -> _LinesPartition:
        return _LinesPartition(self.path, self.batch_size, resume_state)


STDERR = "/dev/stderr"


_block: Optional[dict[str, tuple[str, str]]] = None  # path -> (temp file, target)


@contextmanager
def atomic_outputs(paths: Iterable[Optional[str]]) -> Iterator[None]:
    """Each file of `paths` is written to a new temp file beside it (by the
    sinks built inside the block), which replaces it only when the block ends
    without an error: a run that fails or is interrupted leaves the old file
    as it was. Bytewax closes sinks on failure too, so closing cannot be the
    commit; and it builds a sink only when something reaches it, so the temp
    files are made here (an empty input still empties its outputs)."""
    global _block
    block: dict[str, tuple[str, str]] = {}
    try:
        for path in paths:
            if path and path not in ("-", STDERR) and path not in block and _is_regular_or_absent(path):
                block[path] = _new_temp(path)
        _block = block
        yield
    except BaseException:
        for temp, _ in block.values():
            _unlink(temp)
        raise
    else:
        for temp, target in block.values():
            os.replace(temp, target)
    finally:
        _block = None


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _new_temp(path: str) -> tuple[str, str]:
    """A new empty temp file beside `path` (its symlink followed), with the
    mode `path` has (or would get): `(temp, target)`."""
    target = os.path.realpath(path)
    directory, name = os.path.split(target)
    temp = os.path.join(directory, f".{name}.{os.getpid()}-{secrets.token_hex(4)}.partial")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        if os.path.exists(target):
            os.chmod(fd, stat.S_IMODE(os.stat(target).st_mode))
    finally:
        os.close(fd)
    return temp, target


def _is_regular_or_absent(path: str) -> bool:
    """Only a regular file (or none yet) is replaced by renaming; a device or
    a pipe (`/dev/null`) is written through."""
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except FileNotFoundError:
        return True


class _BytesLinesPartition(StatefulSinkPartition[bytes, Optional[int]]):
    def __init__(self, path: str, resume: Optional[int]) -> None:
        # The process's own streams are written through, never reopened or seeked.
        self._stdout = path in ("-", STDERR)
        self._replacing = False  # a temp file that replaces `path` on success
        if self._stdout:
            self._f: BinaryIO = sys.stderr.buffer if path == STDERR else sys.stdout.buffer
        elif resume is None and _block is not None and path in _block:
            self._f = open(_block[path][0], "wb")
            self._replacing = True
        else:
            mode = "r+b" if resume is not None and os.path.exists(path) else "wb"
            self._f = open(path, mode)
            if resume is not None:
                self._f.seek(resume)
                self._f.truncate()

    def write_batch(self, items: list[bytes]) -> None:
        write = self._f.write  # item by item: a batch can hold every session closed at EOF
        for item in items:
            write(item)
            write(b"\n")
        if self._stdout:
            self._f.flush()  # whole lines, not interleaved with progress messages

    def snapshot(self) -> Optional[int]:
        self._f.flush()
        return None if self._stdout else self._f.tell()

    def close(self) -> None:
        self._f.flush()
        if not self._stdout:
            if self._replacing:  # on disk before it replaces the old file
                os.fsync(self._f.fileno())
            self._f.close()


class JsonlSink(FixedPartitionedSink[bytes, Optional[int]]):
    """Bytes items as lines of one file (`-` stdout, `/dev/stderr` stderr). On resume the file is cut
    back to the snapshotted length, so a replay does not write lines twice.
    Inside `atomic_outputs` (a run without recovery) a fresh file is written
    beside the target and renamed over it when the run succeeds."""

    def __init__(self, path: str) -> None:
        self.path = path

    def list_parts(self) -> list[str]:
        return [self.path]

    def part_fn(self, item_key: str) -> int:
        return 0

    def build_part(self, step_id: str, for_part: str, resume_state: Optional[int]) -> _BytesLinesPartition:
        return _BytesLinesPartition(self.path, resume_state)
