"""Run the dataflow in this process (what `protosessions run` calls)."""

from __future__ import annotations

import gc
from datetime import timedelta

from bytewax.run import cli_main

from protosessions.options import RunConfig
from protosessions.units import parse_duration_us

from .sessions import build_flow


def recovery_config(config: RunConfig):
    """Bytewax recovery from `--recovery-dir`, or None."""
    if not config.recovery_dir:
        return None
    from .recovery import checked_recovery_config
    return checked_recovery_config(config.recovery_dir, config.backup_interval)


def run(config: RunConfig) -> None:
    # Open proto-sessions are many small long-lived objects: with the default
    # thresholds the cyclic GC rescans them over and over. Collect young
    # objects less often; nothing here depends on cycles being freed early.
    gc.set_threshold(100_000, 50, 100)
    flow = build_flow(config)
    epoch = timedelta(microseconds=parse_duration_us(config.snapshot_interval))
    cli_main(flow, workers_per_process=config.workers, epoch_interval=epoch,
             recovery_config=recovery_config(config))
