"""The protosessions dataflow.

    input -> parse -> (dead letters) -> identity [keyed by join-key group]
          -> sessions [keyed by (property_id, ACID) group] -> output

Files in, files out; or Kafka in, Kafka out (`PROTOSESSIONS_KAFKA_BROKERS`).
Launch with `python -m bytewax.run flows.sessions:flow` (configured by
`PROTOSESSIONS_*` variables) or through `protosessions run`.
"""

from __future__ import annotations

import gc
import os
from importlib import resources

import bytewax.operators as op
from bytewax.dataflow import Dataflow
from bytewax.inputs import Source
from bytewax.outputs import Sink

from protosessions.closer import Requeue
from protosessions.options import RunConfig, from_env, kafka_config
from protosessions.units import parse_duration_us

from . import metrics
from .files import STDERR, JsonlSink, JsonlSource
from .steps import (IdentityLogic, SessionLogic, WorkerClocks, dead_letters, keyed_hits,
                    make_parse, rekey_by_session)

SAMPLE = "sample_hits.jsonl"


def sample_path() -> str:
    """The small bundled sample the job runs on when given no input."""
    return str(resources.files("protosessions") / "data" / SAMPLE)


def build_flow(config: RunConfig, source: Source | None = None, sessions_sink: Sink | None = None,
               dead_sink: Sink | None = None, requeue_sink: Sink | None = None,
               flow_id: str = "protosessions", snapshots: bool = True,
               peers: bool = False) -> Dataflow:
    """Wire the steps.

    Sources yield `(location, raw bytes)`, or Kafka messages (read by the
    parse step through `flows.kafka.MESSAGE`); the session sink gets `(ACID, session JSON bytes)`, the dead-letter sink
    `(key, JSON bytes)`, the requeue sink (strategy `evict`) `Requeue`s.
    `snapshots=False` (a run without recovery) skips building snapshots that
    Bytewax would only throw away: it asks for them every epoch regardless.
    `peers=True` (under `python -m bytewax.run`, maybe one process of
    several) shares partition progress with the other processes.
    """
    config.check()
    settings = config.settings
    streaming = config.streaming and not config.until_end  # the clock follows wall time
    clocks = WorkerClocks(streaming=streaming, skip_catching_up=bool(config.skip_catching_up),
                          idle_us=settings.tick_us)  # idle: no hit for a tick of wall time
    metrics.register()
    flow = Dataflow(flow_id)

    message = None  # the source yields `(location, raw)`
    if config.streaming:
        from .kafka import MESSAGE, AlignedSource, DeliveredKafkaSink, hits_source
        from .progress import ProgressChannel

        kconf = kafka_config(config.kafka_config)
        brokers = config.kafka_brokers
        if source is None:
            source = hits_source(brokers, config.hits_topic, kconf, config.batch_size,
                                 tail=not config.until_end,
                                 max_skew_us=parse_duration_us(config.max_partition_skew),
                                 max_peer_skew_us=parse_duration_us(config.max_peer_skew))
            if peers and isinstance(source, AlignedSource):
                ProgressChannel(brokers, config.hits_topic, kconf, source.aligner).start()
            message = MESSAGE
        raw = op.input("input", flow, source)
        sessions_sink = sessions_sink or DeliveredKafkaSink(brokers, config.sessions_topic, kconf)
        dead_sink = dead_sink or DeliveredKafkaSink(brokers, config.dead_letter_topic, kconf)
        if settings.eviction_strategy == "evict":
            requeue_sink = requeue_sink or DeliveredKafkaSink(brokers, config.hits_topic, kconf)
        dead_key = None
    else:
        source = source or JsonlSource(config.input or sample_path(), config.batch_size)
        raw = op.input("input", flow, source)
        sessions_sink = sessions_sink or JsonlSink(config.output or "-")
        dead_sink = dead_sink or JsonlSink(config.dead_letter or STDERR)
        dead_key = "dead"

    parsed = op.flat_map_batch("parse", raw, make_parse(settings, clocks, message))
    op.output("write_dead_letters", op.flat_map_batch("rejects", parsed, dead_letters(dead_key)),
              dead_sink)
    by_join_key = op.flat_map_batch("key_by_join_key", parsed, keyed_hits(settings.identity_shards))
    joined = op.stateful_batch("identity", by_join_key,
                               lambda resume: IdentityLogic(settings, resume, snapshots))
    by_acid = op.flat_map_batch("key_by_acid", joined, rekey_by_session(settings.shards))
    closed = op.stateful_batch("sessions", by_acid,
                               lambda resume: SessionLogic(settings, clocks, resume, not streaming,
                                                                snapshots))
    op.output("write_sessions", op.flat_map_batch("closed_sessions", closed, _sessions),
              sessions_sink)
    if requeue_sink is not None:
        op.output("write_requeued", op.flat_map_batch("requeued_hits", closed, _requeued),
                  requeue_sink)
    return flow


def _sessions(batch: list) -> list:
    """`(shard, (ACID, session))` -> `(ACID, session)`."""
    return [v for _, v in batch if v.__class__ is not Requeue]


def _requeued(batch: list) -> list:
    return [v for _, v in batch if v.__class__ is Requeue]


def tune_gc() -> None:
    """Open proto-sessions are many small long-lived objects: with the default
    thresholds the cyclic GC rescans them over and over. Collect young objects
    less often; nothing here depends on cycles being freed early."""
    gc.set_threshold(100_000, 50, 100)


def __getattr__(name: str) -> Dataflow:
    """`flow`: what `python -m bytewax.run flows.sessions:flow` runs, built from
    `PROTOSESSIONS_*` only when asked for (importing this module builds nothing)."""
    if name == "flow":
        tune_gc()
        config = RunConfig.from_values(from_env(os.environ))
        store = os.environ.get("BYTEWAX_RECOVERY_DIRECTORY")
        if store:  # as `protosessions run` does: a resume must not change these
            from .recovery import check_resume, resume_record
            check_resume(store, resume_record(config))
        return build_flow(config, peers=True)
    raise AttributeError(name)
