"""Bytewax recovery: creating the partitions, and refusing a store that is not usable.

A store is trusted: Bytewax's snapshots are pickles, so whoever can write the
directory can run code in the job at resume (README, "Recovery").
"""

from __future__ import annotations

import json
import os
import pickle
import secrets
import sqlite3
from datetime import timedelta
from pathlib import Path
from typing import Any, Optional

from bytewax.recovery import RecoveryConfig, init_db_dir

from .state_store import partitions


class RecoveryError(ValueError):
    """The recovery directory cannot be used as it is (one clear line for the CLI)."""


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


def checked_recovery_config(directory: str, backup_interval_us: int) -> RecoveryConfig:
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
    _check_writable(directory, parts)
    backup = timedelta(microseconds=backup_interval_us)
    return RecoveryConfig(directory, backup_interval=backup)


def _check_writable(directory: str, parts: list[str]) -> None:
    """Bytewax writes every partition (and journals beside it) as it runs;
    it would panic on the first snapshot. Tried, not guessed from modes."""
    for path in [directory, *parts]:
        try:
            if path == directory:
                probe = os.path.join(directory, f".write-test-{secrets.token_hex(4)}")
                with open(probe, "wb"):
                    pass
                os.unlink(probe)
            else:
                with open(path, "r+b"):
                    pass
        except OSError as e:
            raise RecoveryError(f"recovery store {path} is not writable ({e.strerror}): give the job's "
                                "user write access to the directory and its part-*.sqlite3 files") from None


RECORD = "protosessions-resume.json"
# What the store's state is written in: the session snapshots
# (`protosessions.state.SNAPSHOT_VERSION`), held hits (`Hit`) and the shards'
# routing keys (`flows.placement`) and the session shards' state stores
# (`flows.state_store`, format 9 on). A store of another format is refused
# whole, before Bytewax hands any of it to a step that would misread it.
# 8: `Hit` carries `d8a_form` (SPEC "The d8a form").
# 9: the session shards keep their proto-sessions in state stores.
STATE_FORMAT = 9
# What a resume must not change: where data comes from and goes (files are
# resumed by byte offset), the sharding (it decides which state a key's
# hits find) and the rules that decide which hits form a session. Tick,
# compaction, size and skew limits, batch size and workers may change.
RECORDED = ("input", "output", "dead_letter", "shards", "identity_shards", "session_duration",
            "max_events", "max_duration", "allowed_lateness", "join_by_session_stamp",
            "join_by_user_id", "eviction_strategy", "input_format", "identity_rules")


def resume_record(config: Any) -> dict[str, Any]:
    """The values of `RECORDED` for a run; file paths absolute, Kafka by topic."""
    record = {name: config.given(name) for name in RECORDED}  # as given: text
    record["state_format"] = STATE_FORMAT
    if config.streaming:
        record.update(input="kafka topic " + config.hits_topic, output=None, dead_letter=None)
    else:
        record["input"] = [_absolute(p) for p in config.input] or None
        for name in ("output", "dead_letter"):
            record[name] = _absolute(record[name])
    return record


def _absolute(path: str | None) -> str | None:
    return os.path.abspath(path) if path and path != "-" else path


def check_resume(directory: str, record: dict[str, Any]) -> bool:
    """Refuse a run whose `record` differs from the one kept in the store;
    keep it there when the store is first used. True when the store had
    been used before (the run resumes)."""
    path = os.path.join(directory, RECORD)
    try:
        with open(path, encoding="utf-8") as f:
            kept = json.load(f)
    except FileNotFoundError:
        kept = None
    except (OSError, ValueError) as e:
        raise RecoveryError(f"{path} is unreadable ({e}): restore it, or start afresh with a new "
                            "recovery directory") from None
    if kept is None:
        temp = f"{path}.{secrets.token_hex(4)}.tmp"
        try:
            # Private like the rest of the store (the process umask may be 022).
            with os.fdopen(os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600),
                           "w", encoding="utf-8") as f:
                json.dump(record, f, indent=1, sort_keys=True)
            os.replace(temp, path)
        except OSError as e:
            raise RecoveryError(f"recovery store {directory} is not writable ({e.strerror}): give the "
                                "job's user write access to it") from None
        return False
    if kept.get("state_format") != record.get("state_format", STATE_FORMAT):
        written = kept.get("state_format")
        raise RecoveryError(f"recovery store {directory} holds state of format "
                            f"{written if written is not None else 'older than 7'}, this build "
                            f"reads format {STATE_FORMAT}: finish it with the build that wrote it, "
                            "or start afresh with a new recovery directory")
    for name in RECORDED:
        if name in kept and kept[name] != record.get(name):
            flag = "--" + name.replace("_", "-")
            raise RecoveryError(f"recovery store {directory} was written with {flag} {kept[name]!r}, "
                                f"this run has {record.get(name)!r}: resume with the recorded value "
                                f"(see {RECORD}) or start afresh with a new recovery directory")
    return True


_TEXT_COLUMNS = {"parts": ("created_at",), "exs": ("created_at",), "fronts": ("created_at",),
                 "commits": ("created_at",), "snaps": ("created_at", "step_id", "state_key")}
_STEPS = ("input", "identity", "sessions", "write_sessions", "write_dead_letters",
          "write_requeued")  # the steps of `flows.sessions.build_flow` that hold state


def damaged_snapshot(directory: str) -> Optional[str]:
    """The first damage in the store (one line naming the file), or None:
    a partition SQLite's integrity check fails on, a text column that is
    not UTF-8, a snapshot of a step or shard the flow does not have, a
    snapshot that does not load as this build loads it, or a state store
    (of a session or identity shard) that does not (`flows.state_store`).
    Checked before a resume, as Bytewax panics on such a store; each
    snapshot is loaded and dropped in turn, so this costs time (one more
    read of the state) but little memory. Unpickling runs code: the store is trusted anyway."""
    from .state_store import check_store_file, store_files
    from .steps import check_snapshot

    keys = _shard_keys(directory)
    for part in partitions(directory):
        try:
            # read-write, not "ro": after a kill the WAL may need the recovery that a
            # read-only connection cannot run (the resume opens it read-write anyway)
            with sqlite3.connect(f"file:{part}?mode=rw", uri=True) as db:
                db.text_factory = bytes  # decoded below: a damaged text is named, not raised
                problems = [r[0] for r in db.execute("PRAGMA integrity_check")]
                if problems != [b"ok"]:
                    return _damage(part, "fails SQLite's integrity check", None)
                for table, columns in _TEXT_COLUMNS.items():
                    for row in db.execute(f"SELECT {', '.join(columns)} FROM {table}"):
                        for value in row:
                            value.decode("utf-8")
                rows = db.execute("SELECT step_id, state_key, ser_change FROM snaps "
                                  "WHERE ser_change IS NOT NULL").fetchall()
        except (sqlite3.Error, UnicodeDecodeError) as e:
            return _damage(part, "is not a readable recovery partition", e)
        for step_id, key, blob in rows:
            step_id, key = step_id.decode(), key.decode()
            flow, _, step = step_id.rpartition(".")
            if step not in _STEPS or not flow:
                return _damage(part, f"holds a snapshot of a step this flow does not have "
                               f"({step_id!r})", None)
            try:
                state = pickle.loads(blob)
                if step in ("identity", "sessions") and state is not None:
                    names = keys.get(step)
                    if names is not None and key not in names:
                        raise ValueError(f"no shard is keyed {key!r}")
                    if names is not None and step == "sessions" and names[state[1][2]] != key:
                        raise ValueError(f"the snapshot of shard {key!r} names shard {state[1][2]}")
                    check_snapshot(step, state, directory)
            except Exception as e:
                return _damage(part, f"holds a snapshot of step {step_id!r} key {key!r} that does "
                               "not load", e)
    for path in store_files(directory):
        try:
            check_store_file(path)
        except Exception as e:
            return _damage(path, "is a state store that does not load", e)
    return None


def _shard_keys(directory: str) -> dict[str, tuple[str, ...]]:
    """The routing keys of each keyed step, by the shard counts of the
    resume record (none if it cannot be read: that is checked elsewhere)."""
    from .placement import shard_keys

    try:
        with open(os.path.join(directory, RECORD), encoding="utf-8") as f:
            kept = json.load(f)
        ishards = 1 if kept["eviction_strategy"] == "evict" else kept["identity_shards"]
        return {"sessions": shard_keys("s", int(kept["shards"])),
                "identity": shard_keys("i", int(ishards))}
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def _damage(part: str, what: str, e: Optional[BaseException]) -> str:
    cause = ("" if e is None else
             " (" + f"{type(e).__module__}.{type(e).__name__}".removeprefix("builtins.") + ")")
    kind = "" if "state store" in what else "recovery partition "
    return (f"{kind}{part} {what}{cause}: the store is damaged; restore the "
            "directory from a backup, or start afresh with a new one (the job then reads its "
            "input from the start)")


def cmd_recovery(args) -> int:
    from .usage import UsageError

    try:
        made = init(args.dir, args.partitions)
    except (RecoveryError, OSError) as e:
        raise UsageError(f"protosessions recovery init: {e}") from None
    print(f"created {len(made)} recovery partitions in {args.dir}")
    return 0
