"""The protosessions dataflow.

    input (read, validate, stamp merge keys) -> (dead letters)
          -> identity [keyed by join-key group] -> sessions [keyed by
          (property_id, ACID) group] -> output

Both keyed steps handle their hits in the time merge of the input
partitions (SPEC rule 2), so the sessions do not depend on read pace,
batching, workers or processes.

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
from flows.options import NO_STORE_FOR_BUDGET, RunConfig, from_env
from . import metrics
from .backlog import backlog
from .files import STDERR, JsonlSink, JsonlSource
from .steps import (IdentityLogic, SessionLogic, dead_letters, make_clock, to_identity,
                    to_sessions)

SAMPLE = "sample_hits.jsonl"


def sample_path() -> str:
    """The small bundled sample the job runs on when given no input."""
    return str(resources.files("protosessions") / "data" / SAMPLE)


def build_flow(config: RunConfig, source: Source | None = None, sessions_sink: Sink | None = None,
               dead_sink: Sink | None = None, requeue_sink: Sink | None = None,
               flow_id: str = "protosessions", snapshots: bool = True,
               state_dir: str | None = None) -> Dataflow:
    """Wire the steps.

    A source yields `(hits, dead letters, progress)` batches (`flows.sources`:
    files, Kafka partitions, or in-memory partitions in tests); the session
    sink gets `(ACID, session JSON bytes)`, the dead-letter sink `(key, JSON
    bytes)`, the requeue sink (strategy `evict`) `Requeue`s.
    `snapshots=False` (a run without recovery) skips building snapshots that
    Bytewax would only throw away: it asks for them every epoch regardless.
    `state_dir` (the recovery directory): where the session shards keep
    their state store (`flows.state_store`), so that a snapshot writes what
    changed, not the whole open state.
    """
    config.check()
    settings = config.settings
    streaming = config.streaming and not config.until_end  # the clock follows wall time
    finite = not streaming
    # Strategy evict moves claims between join keys: one identity shard sees them all.
    ishards = 1 if settings.eviction_strategy == "evict" else settings.identity_shards
    metrics.register()
    backlog.reset(config.max_held_hits)
    flow = Dataflow(flow_id)

    if config.streaming:
        from .kafka import DeliveredKafkaSink
        from .kafka_source import HitsSource

        kconf = config.kafka_settings
        brokers = config.kafka_brokers
        source = source or HitsSource(brokers, config.hits_topic, kconf, settings,
                                      config.batch_size, tail=not config.until_end)
        sessions_sink = sessions_sink or DeliveredKafkaSink(brokers, config.sessions_topic, kconf)
        dead_sink = dead_sink or DeliveredKafkaSink(brokers, config.dead_letter_topic, kconf)
        if settings.eviction_strategy == "evict":
            requeue_sink = requeue_sink or DeliveredKafkaSink(brokers, config.hits_topic, kconf)
        dead_key = None
    else:
        source = source or JsonlSource(list(config.input or [sample_path()]), settings,
                                       config.batch_size)
        sessions_sink = sessions_sink or JsonlSink(config.output or "-")
        dead_sink = dead_sink or JsonlSink(config.dead_letter or STDERR)
        dead_key = "dead"

    read = op.input("input", flow, source)
    op.output("write_dead_letters", op.flat_map_batch("rejects", read, dead_letters(dead_key)),
              dead_sink)
    by_join_key = op.flat_map_batch("key_by_join_key", read,
                                    to_identity(ishards, settings,
                                                settings.identity_rules == "d8a"))
    stores = istores = None
    budget = 0  # a shard's share of the process's --memory-budget
    if snapshots and state_dir:
        from .placement import shard_keys
        from .state_store import ShardStores
        stores = ShardStores(state_dir, f"{flow_id}.sessions", shard_keys("s", settings.shards))
        istores = ShardStores(state_dir, f"{flow_id}.identity", shard_keys("i", ishards),
                              "identity")
        total = config.memory_budget_bytes()
        budget = max(1, total * _processes() // settings.shards) if total else 0
    joined = op.stateful_batch("identity", by_join_key,
                               lambda resume: IdentityLogic(settings, resume, finite, ishards,
                                                            snapshots, istores))
    by_acid = op.flat_map_batch("key_by_acid", joined, to_sessions(settings.shards, settings))
    idle_us = settings.tick_us  # idle: no hit for a tick of wall time
    closed = op.stateful_batch(
        "sessions", by_acid,
        lambda resume: SessionLogic(settings, make_clock(streaming, bool(config.skip_catching_up),
                                                         idle_us),
                                    resume, finite, snapshots, stores, budget))
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
    `PROTOSESSIONS_*` only when asked for (importing this module builds nothing).
    Kafka that cannot be used ends the process with one line and exit code 2;
    SIGINT/SIGTERM stop the run cleanly (`flows.stop`; the process exits 0).
    It prints the progress and summary lines `protosessions run` prints."""
    if name == "flow":
        import sys

        from . import stop
        from .kafka_admin import KafkaUnavailable, preflight

        tune_gc()
        try:
            config = RunConfig.from_values(from_env(os.environ))
            config.check()
        except ValueError as e:  # a PROTOSESSIONS_* setting that is wrong: one line
            print(f"flows.sessions:flow: {e}", file=sys.stderr)
            raise SystemExit(2) from None
        try:
            preflight(config)
        except KafkaUnavailable as e:
            print(f"flows.sessions:flow: {e}", file=sys.stderr)
            raise SystemExit(2) from None
        launched = _launched_by_bytewax()
        store = _launcher_store()
        if config.memory_budget_bytes() and not store:
            print(f"flows.sessions:flow: {NO_STORE_FOR_BUDGET}", file=sys.stderr)
            raise SystemExit(2)
        if store:  # as `protosessions run` does: a resume must not change these
            from .recovery import RecoveryError, check_resume, resume_record
            try:
                check_resume(store, resume_record(config))
            except RecoveryError as e:
                print(f"flows.sessions:flow: {e}", file=sys.stderr)
                raise SystemExit(2) from None
        # Without a recovery store Bytewax still asks every step for a snapshot
        # each epoch, only to drop it: building none saves that work.
        flow = build_flow(config, snapshots=bool(store) or not launched, state_dir=store)
        if launched:  # not when a test (or a notebook) only builds it
            stop.install(cluster=_processes() > 1)
            _report_progress(config)
        return flow
    raise AttributeError(name)


def _processes() -> int:
    """How many processes the launcher's hostfile lists (1 without one)."""
    path = os.environ.get("BYTEWAX_HOSTFILE_PATH")
    if not path:
        return 1
    try:
        with open(path, encoding="utf-8") as f:
            return sum(1 for line in f if line.strip())
    except OSError:
        return 1


def _launched_by_bytewax() -> bool:
    """Whether this process runs Bytewax's launcher (`python -m bytewax.run`,
    or `python -m flows.launch`, which runs it as `__main__`)."""
    import sys

    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    return spec is not None and spec.name == "bytewax.run"


def _launcher_store() -> str | None:
    """The recovery store Bytewax's launcher runs with (`-r` or
    `BYTEWAX_RECOVERY_DIRECTORY`): it has parsed its arguments into its
    `kwargs` before it imports the flow. Elsewhere (a test building the
    flow), the variable."""
    import sys

    kwargs = getattr(sys.modules.get("__main__"), "kwargs", None)
    if not isinstance(kwargs, dict):
        return os.environ.get("BYTEWAX_RECOVERY_DIRECTORY")
    rc = kwargs.get("recovery_config")
    return str(rc.db_dir) if rc is not None else None


def _report_progress(config: RunConfig) -> None:
    """The progress line every few seconds, and the summary line when the
    process exits (Bytewax's launcher runs the flow after importing it)."""
    import atexit
    import sys
    import time

    from protosessions import stats

    from . import stop
    from .progress import Progress, final_line

    progress = Progress(config.sessions_topic if config.streaming else None).__enter__()
    start = time.monotonic()

    def summary() -> None:
        progress.__exit__(None, None, None)
        print(final_line(stats.totals(), time.monotonic() - start, stop.signal_number()),
              file=sys.stderr, flush=True)
    atexit.register(summary)
