"""Bytewax recovery: creating the partitions, and refusing a store that is not usable."""

from __future__ import annotations

import glob
import os
from datetime import timedelta
from pathlib import Path

from bytewax.recovery import RecoveryConfig, init_db_dir

from protosessions.units import parse_duration_us


class RecoveryError(ValueError):
    """The recovery directory cannot be used as it is (one clear line for the CLI)."""


def partitions(directory: str) -> list[str]:
    return sorted(glob.glob(os.path.join(directory, "part-*.sqlite3")))


def init(directory: str, count: int) -> list[str]:
    """Create `count` partitions in a new or empty directory."""
    if count < 1:
        raise RecoveryError("--partitions must be at least 1")
    existing = partitions(directory)
    if existing:
        raise RecoveryError(f"{directory} already holds {len(existing)} recovery partitions; "
                            "they are kept (delete the directory to start afresh)")
    Path(directory).mkdir(parents=True, exist_ok=True)
    init_db_dir(Path(directory), count)
    return partitions(directory)


def checked_recovery_config(directory: str, backup_interval: str) -> RecoveryConfig:
    """A `RecoveryConfig`, after checking the store is initialised and complete."""
    if not os.path.isdir(directory):
        raise RecoveryError(f"recovery directory {directory} does not exist: create it with "
                            f"`protosessions recovery init {directory} --partitions N`")
    parts = partitions(directory)
    if not parts:
        raise RecoveryError(f"recovery directory {directory} holds no partitions: create them with "
                            f"`protosessions recovery init {directory} --partitions N`")
    names = {os.path.basename(p) for p in parts}
    count = len(parts)
    expected = {f"part-{i}.sqlite3" for i in range(count)}
    if names != expected:
        raise RecoveryError(f"recovery directory {directory} has partitions {sorted(names)}, "
                            f"not part-0..part-{count - 1}: it is incomplete or mixed")
    backup = timedelta(microseconds=parse_duration_us(backup_interval))
    return RecoveryConfig(directory, backup_interval=backup)


def cmd_recovery(args) -> int:
    from protosessions.cli import UsageError

    try:
        made = init(args.dir, args.partitions)
    except (RecoveryError, OSError) as e:
        raise UsageError(f"protosessions recovery init: {e}") from None
    print(f"created {len(made)} recovery partitions in {args.dir}")
    return 0
