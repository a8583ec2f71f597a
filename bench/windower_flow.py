"""Benchmark comparison (c): sessionisation with Bytewax's built-in
`SessionWindower` + `collect_window` (keyed by client ID, gap = session
duration, event time from `server_received_time`; no identity joining)."""

from __future__ import annotations

import sys
from datetime import datetime, timedelta

import bytewax.operators as op
import bytewax.operators.windowing as win
import orjson
from bytewax.dataflow import Dataflow
from bytewax.run import cli_main

from flows.files import JsonlSink

from floor_flow import RawJsonlSource
from protosessions.config import Settings


def parse(batch: list) -> list:
    out = []
    for raw in batch:
        hit = orjson.loads(raw)
        out.append((hit["client_id"], hit))
    return out


def ts(hit: dict) -> datetime:
    return datetime.fromisoformat(hit["server_received_time"])


def to_json(item: tuple) -> tuple:
    key, (window_id, hits) = item
    return ("out", orjson.dumps({"client_id": key, "window": window_id,
                                 "hit_count": len(hits), "hits": hits}))


def build(src: str, dst: str) -> Dataflow:
    flow = Dataflow("windower")
    raw = op.input("input", flow, RawJsonlSource([src], Settings()))  # raw lines, as the floor
    keyed = op.flat_map_batch("parse", raw, parse)
    clock = win.EventClock(ts, wait_for_system_duration=timedelta(0))
    windows = win.collect_window("sessions", keyed, clock,
                                 win.SessionWindower(gap=timedelta(minutes=30)))
    op.output("output", op.map("json", windows.down, to_json), JsonlSink(dst))
    return flow


if __name__ == "__main__":
    cli_main(build(sys.argv[1], sys.argv[2]))
