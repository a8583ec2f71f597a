"""The one table of `protosessions run` options, read from flags or from
`PROTOSESSIONS_*` environment variables (for `python -m bytewax.run` and Kubernetes).

A flag `--session-duration` is the variable `PROTOSESSIONS_SESSION_DURATION`;
a switch `--join-by-user-id` / `--no-join-by-user-id` is `true`/`false`; a
repeatable option (`--kafka-config k=v`) is a list, one item per line, or
on one line separated by commas (see `split_list`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Mapping

from .config import SESSION_HITS, Settings
from .units import parse_duration_us

ENV_PREFIX = "PROTOSESSIONS_"


@dataclass(frozen=True)
class Option:
    name: str  # flag without dashes, e.g. "session-duration"
    default: Any
    help: str
    kind: str = "str"  # str | int | bool | list
    engine: bool = False  # part of `Settings`
    choices: tuple[str, ...] = ()  # the only values allowed (kind str), shown in help

    @property
    def dest(self) -> str:
        return self.name.replace("-", "_")

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.dest.upper()


OPTIONS: tuple[Option, ...] = (
    Option("input", None, "JSONL file of hits, or - for stdin (file mode)"),
    Option("output", "-", "where sessions go as JSONL (file mode), - for stdout"),
    Option("dead-letter", None, "JSONL file for rejected hits (file mode; default: stderr)"),
    Option("workers", 1, "worker threads in this process", "int"),
    Option("session-duration", "30m", "inactivity that ends a session", engine=True),
    Option("tick-interval", "1s", "timing-wheel tick: how late a close may be emitted", engine=True),
    Option("max-events", 10000, "hits that close a session at once", "int", engine=True),
    Option("max-duration", "24h", "span from first hit that closes a session", engine=True),
    Option("allowed-lateness", "0s", "how long the clock waits for late hits", engine=True),
    Option("join-by-session-stamp", True, "join clients by session stamp / IP", "bool", engine=True),
    Option("join-by-user-id", True, "join clients by user ID", "bool", engine=True),
    Option("eviction-strategy", "rewrite", "rewrite | evict", engine=True),
    Option("compaction-threshold", "64KiB", "buffered bytes past which a proto-session is compressed", engine=True),
    Option("max-hit-bytes", "65536", "larger hits are rejected (too_large)", engine=True),
    Option("max-future-skew", "10m", "hits further ahead of the wall clock are rejected", engine=True),
    Option("session-hits", "full", "a session record's hits: full (the hits), ids (their ids) "
           "or none (left out)", engine=True, choices=SESSION_HITS),
    Option("shards", 64, "key groups of the session step; keep it fixed across resumes", "int", engine=True),
    Option("identity-shards", 1, "key groups of the identity step; 1 keeps every client's hits on one path, "
           "so several workers give the same sessions as one", "int", engine=True),
    Option("kafka-brokers", None, "HOST:PORT[,HOST:PORT]: run on Kafka instead of files"),
    Option("hits-topic", "hits", "Kafka topic to read hits from"),
    Option("sessions-topic", "sessions", "Kafka topic to write sessions to"),
    Option("dead-letter-topic", "hits.dead", "Kafka topic to write rejected hits to"),
    Option("kafka-config", (), "librdkafka setting key=value (repeatable)", "list"),
    Option("skip-catching-up", False, "after downtime, start the clock at wall time", "bool"),
    Option("until-end", False, "Kafka: read the hits topic to its current end, then close "
           "everything as end_of_input and stop, like a file (backfills, tests)", "bool"),
    Option("recovery-dir", None, "Bytewax recovery directory (see `protosessions recovery init`)"),
    Option("snapshot-interval", "10s", "how often state is snapshotted (Bytewax epoch)"),
    Option("backup-interval", "0s", "how long old snapshots are kept for"),
    Option("batch-size", 2000, "hits read per batch", "int"),
    Option("max-partition-skew", "1s", "Kafka: how far ahead in hit time one partition of the hits "
           "topic may be read before the others (in this process); 0s turns alignment off"),
    Option("max-peer-skew", "1m", "Kafka, several processes: the same bound against partitions "
           "read by the other processes (their progress arrives late, so it is looser)"),
)

BY_DEST = {o.dest: o for o in OPTIONS}


def parse_bool(text: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"not a boolean: {text!r} (use true or false)")


def from_env(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Option values from `PROTOSESSIONS_*` variables, defaults elsewhere."""
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for o in OPTIONS:
        text = environ.get(o.env)
        if text is None:
            values[o.dest] = o.default
        elif o.kind == "int":
            try:
                values[o.dest] = int(text)
            except ValueError:
                raise ValueError(f"{o.env}: not an integer: {text!r}") from None
        elif o.kind == "bool":
            values[o.dest] = parse_bool(text)
        elif o.kind == "list":
            values[o.dest] = split_list(text)
        else:
            values[o.dest] = text
    return values


def split_list(text: str) -> tuple[str, ...]:
    """A list from one environment variable: one item per line when it has
    several lines (so an item may hold commas, e.g. librdkafka's
    `sasl.oauthbearer.extensions`), else comma-separated."""
    parts = text.splitlines() if "\n" in text.strip() else text.split(",")
    return tuple(p.strip() for p in parts if p.strip())


def engine_settings(values: Mapping[str, Any]) -> Settings:
    """The `Settings` part of option values (ValueError names the bad one)."""
    return Settings.from_strings(**{o.dest: values[o.dest] for o in OPTIONS if o.engine})


def kafka_config(pairs: tuple[str, ...] | list[str]) -> dict[str, str]:
    """`["k=v", ...]` -> dict, with a clear error on a pair without `=`."""
    conf: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--kafka-config wants key=value, got {pair!r}")
        conf[key.strip()] = value.strip()
    return conf


@dataclass
class RunConfig:
    """Everything a run needs: engine settings plus where data comes from and goes."""

    settings: Settings
    values: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_values(cls, values: Mapping[str, Any]) -> "RunConfig":
        return cls(engine_settings(values), dict(values))

    def __getattr__(self, name: str) -> Any:
        """Option values by name; an option not given has its default."""
        values = self.__dict__["values"]
        if name in values:
            return values[name]
        if name in BY_DEST:
            return BY_DEST[name].default
        raise AttributeError(name)

    @property
    def streaming(self) -> bool:
        return bool(self.values.get("kafka_brokers"))

    def check(self) -> None:
        """Refuse combinations that cannot work (ValueError, one line)."""
        if self.settings.eviction_strategy == "evict" and not self.streaming:
            raise ValueError("--eviction-strategy evict re-queues hits through the Kafka hits "
                             "topic: it needs --kafka-brokers")
        for flag, value in (("max-partition-skew", self.max_partition_skew),
                            ("max-peer-skew", self.max_peer_skew)):
            try:
                parse_duration_us(value)
            except ValueError as e:
                raise ValueError(f"--{flag}: {e}") from None
        conf = kafka_config(self.kafka_config)
        for key, bad in (("enable.idempotence", "false"), ("acks", "0"), ("acks", "1")):
            if str(conf.get(key, "")).lower() == bad:
                raise ValueError(f"--kafka-config {key}={bad} would allow lost or duplicated "
                                 "sessions; the sink needs idempotence and acks=all")
