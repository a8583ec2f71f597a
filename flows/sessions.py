"""The protosessions dataflow.

    input -> parse -> (dead letters) -> identity [keyed by join key shard]
          -> sessions [keyed by (property_id, ACID) shard] -> output

Launch with `python -m bytewax.run flows.sessions:flow` (configured by
`PROTOSESSIONS_*` variables) or through `protosessions run`.
"""

from __future__ import annotations

import os
from importlib import resources

import bytewax.operators as op
from bytewax.dataflow import Dataflow
from bytewax.inputs import Source
from bytewax.outputs import Sink

from protosessions.options import RunConfig, from_env

from .files import JsonlSink, JsonlSource
from .steps import (IdentityLogic, SessionLogic, WorkerClocks, dead_letters, keyed_hits,
                    make_parse, rekey_by_session)

SAMPLE = "sample_hits.jsonl"


def sample_path() -> str:
    """The small bundled sample the job runs on when given no input."""
    return str(resources.files("protosessions") / "data" / SAMPLE)


def build_flow(config: RunConfig, source: Source | None = None, sessions_sink: Sink | None = None,
               dead_sink: Sink | None = None, flow_id: str = "protosessions") -> Dataflow:
    """Wire the steps. Sources yield `(location, raw bytes)`; the session sink
    gets `(ACID, session JSON bytes)`, the dead-letter sink `("dead", JSON bytes)`."""
    settings = config.settings
    finite = not config.streaming
    if source is None:
        source = JsonlSource(config.input or sample_path(), config.batch_size)
    if sessions_sink is None:
        sessions_sink = JsonlSink(config.output or "-")
    if dead_sink is None:
        dead_sink = JsonlSink(config.dead_letter or "/dev/stderr")

    clocks = WorkerClocks()
    flow = Dataflow(flow_id)
    raw = op.input("input", flow, source)
    parsed = op.flat_map_batch("parse", raw, make_parse(settings, clocks))
    op.output("write_dead_letters", op.flat_map_batch("rejects", parsed, dead_letters), dead_sink)
    by_join_key = op.flat_map_batch("key_by_join_key", parsed, keyed_hits(settings.identity_shards))
    joined = op.stateful_batch("identity", by_join_key,
                               lambda resume: IdentityLogic(settings, clocks, resume))
    by_acid = op.flat_map_batch("key_by_acid", joined, rekey_by_session(settings.shards))
    closed = op.stateful_batch("sessions", by_acid,
                               lambda resume: SessionLogic(settings, clocks, resume, finite))
    op.output("write_sessions", op.flat_map_batch("unshard", closed, _values), sessions_sink)
    return flow


def _values(batch: list) -> list:
    """`(shard, (ACID, session))` -> `(ACID, session)`."""
    return [v for _, v in batch]


def _from_env() -> Dataflow:
    return build_flow(RunConfig.from_values(from_env(os.environ)))


flow = _from_env()
