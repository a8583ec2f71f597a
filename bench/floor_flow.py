"""Benchmark floor (b): a bare Bytewax flow that only parses and re-serialises
each hit, file to file, with the same source and sink as the real job."""

from __future__ import annotations

import sys

import bytewax.operators as op
import orjson
from bytewax.dataflow import Dataflow
from bytewax.run import cli_main

from flows.files import JsonlSink, JsonlSource, _LinesPartition
from protosessions.config import Settings


class RawBatches:
    """For a job's partition reader (`flows.sources.ReaderPartition`): its
    reads without its parse, each batch the raw values."""

    _ended: bool

    def next_batch(self) -> list:
        if self._ended:
            raise StopIteration()
        items, self._ended, _ = self.read_raw()  # type: ignore[attr-defined]
        return [raw for _, raw, _ in items]


class _RawLines(RawBatches, _LinesPartition):
    """The job's file partition (chunked reads, line split), raw lines."""


class RawJsonlSource(JsonlSource):
    def build_part(self, step_id: str, for_part: str, resume_state):
        index = int(for_part.split(":", 1)[0])
        return _RawLines(self.paths[index], self.settings, index, len(self.paths),
                         self.batch_size, resume_state)


def reserialise(batch: list) -> list:
    return [("out", orjson.dumps(orjson.loads(raw))) for raw in batch]


def build(src: str, dst: str) -> Dataflow:
    flow = Dataflow("floor")
    raw = op.input("input", flow, RawJsonlSource([src], Settings()))
    op.output("output", op.flat_map_batch("reserialise", raw, reserialise), JsonlSink(dst))
    return flow


if __name__ == "__main__":
    cli_main(build(sys.argv[1], sys.argv[2]), workers_per_process=int(sys.argv[3]) if len(sys.argv) > 3 else 1)
