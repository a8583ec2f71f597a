"""JSONL file input and output that resume by byte offset."""

from __future__ import annotations

import os
import secrets
import select
import stat
import sys
from contextlib import contextmanager
from typing import BinaryIO, Iterable, Iterator, Optional

from bytewax.inputs import FixedPartitionedSource
from bytewax.outputs import FixedPartitionedSink, StatefulSinkPartition

from protosessions.config import Settings

from .sources import Batch, Raw, ReaderPartition

STDIN_WAIT_S = 0.1  # how long one batch waits for a quiet stdin pipe


class _LinesPartition(ReaderPartition):
    """One JSONL file (or stdin) read in large chunks, lines split here: a
    `readline` call per hit costs more than the rest of the source. Blank
    lines are skipped but counted; a line's number is its merge offset."""

    CHUNK = 1 << 20

    def __init__(self, path: str, settings: Settings, index: int, count: int,
                 batch_size: int, resume: Optional[tuple]) -> None:
        super().__init__(settings, index, count, resume)
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
            self._offset, self._line = resume[0]
            self._f.seek(self._offset)

    def _read(self) -> Optional[bytes]:
        """The next chunk (b"" at the end); None when stdin has nothing yet,
        so a quiet pipe does not hide a stop request (`flows.stop`)."""
        if not self._stdin:
            return self._f.read(self.CHUNK)
        fd = self._f.fileno()
        if not select.select([fd], [], [], STDIN_WAIT_S)[0]:
            return None
        return os.read(fd, self.CHUNK)  # what the pipe holds, not a full chunk

    def _fill(self) -> bool:
        """Read a chunk into `_pending`; False if none was there yet."""
        chunk = self._read()
        if chunk is None:
            return False
        if not chunk:
            self._eof = True
            if self._tail:
                self._pending.append(self._tail)
                self._tail = b""
            return True
        lines = (self._tail + chunk).split(b"\n")
        self._tail = lines.pop()
        self._pending.extend(lines)
        return True

    def read_raw(self) -> tuple[list[Raw], bool, bool]:
        while len(self._pending) < self._batch and not self._eof:
            if not self._fill():
                break
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
            if raw and not raw.isspace():  # not blank (strip() would copy it)
                out.append((line, raw, (name, line)))
        self._line = line
        self._offset += size
        return out, self._eof and not self._pending, False

    def position(self) -> Optional[tuple]:
        return None if self._stdin else (self._offset, self._line)

    def close(self) -> None:
        if not self._stdin:
            self._f.close()


class JsonlSource(FixedPartitionedSource[Batch, tuple]):
    """JSONL files (or stdin), each one partition of the time merge, in the
    order given. Resumes at the snapshotted offsets."""

    def __init__(self, paths: list[str], settings: Settings, batch_size: int = 2000) -> None:
        self.paths = list(paths)
        self.settings = settings
        self.batch_size = batch_size

    def list_parts(self) -> list[str]:
        return [f"{i}:{p}" for i, p in enumerate(self.paths)]

    def build_part(self, step_id: str, for_part: str, resume_state: Optional[tuple]
                   ) -> _LinesPartition:
        index = int(for_part.split(":", 1)[0])
        return _LinesPartition(self.paths[index], self.settings, index, len(self.paths),
                               self.batch_size, resume_state)


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
