"""Run the dataflow in this process (what `protosessions run` calls)."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from datetime import timedelta
from typing import Any

from bytewax.recovery import InconsistentPartitionsError, MissingPartitionsError, NoPartitionsError
from bytewax.run import cli_main

from flows.options import RunConfig

from . import stop
from .kafka_admin import preflight
from .recovery import RecoveryError, checked_recovery_config
from .sessions import build_flow, tune_gc


def run(config: RunConfig,
        during: AbstractContextManager[Any] | None = None) -> int | None:
    """Build and run the flow, inside `during` (the CLI's progress line: so
    it starts with the dataflow, not while the preflight waits); returns the
    signal that stopped it early, if one did (`flows.stop`). A recovery store
    that cannot be used raises `RecoveryError`; Kafka that cannot be used,
    `KafkaUnavailable`."""
    tune_gc()
    preflight(config)  # fails in --kafka-timeout, not never
    recovery = (checked_recovery_config(config.recovery_dir, config.backup_interval_us)
                if config.recovery_dir else None)
    flow = build_flow(config, snapshots=recovery is not None,
                      state_dir=config.recovery_dir if recovery is not None else None)
    epoch = timedelta(microseconds=config.snapshot_interval_us)
    stop.install()
    try:
        with during or nullcontext():
            cli_main(flow, workers_per_process=config.workers, epoch_interval=epoch,
                     recovery_config=recovery)
    except (InconsistentPartitionsError, MissingPartitionsError, NoPartitionsError) as e:
        raise RecoveryError(f"recovery directory {config.recovery_dir}: {e}") from None
    finally:
        stopped_by = stop.signal_number()
        stop.reset()
    return stopped_by
