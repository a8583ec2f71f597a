"""Benchmark floor (b): a bare Bytewax flow that only parses and re-serialises
each hit, file to file, with the same source and sink as the real job."""

from __future__ import annotations

import sys

import bytewax.operators as op
import orjson
from bytewax.dataflow import Dataflow
from bytewax.run import cli_main

from flows.files import JsonlSink, JsonlSource


def reserialise(batch: list) -> list:
    return [("out", orjson.dumps(orjson.loads(raw))) for _, raw in batch]


def build(src: str, dst: str) -> Dataflow:
    flow = Dataflow("floor")
    raw = op.input("input", flow, JsonlSource(src))
    op.output("output", op.flat_map_batch("reserialise", raw, reserialise), JsonlSink(dst))
    return flow


if __name__ == "__main__":
    cli_main(build(sys.argv[1], sys.argv[2]), workers_per_process=int(sys.argv[3]) if len(sys.argv) > 3 else 1)
