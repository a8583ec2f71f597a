"""The one table of `protosessions run` options, read from flags or from
`PROTOSESSIONS_*` environment variables (for `python -m bytewax.run` and Kubernetes).

A flag `--session-duration` is the variable `PROTOSESSIONS_SESSION_DURATION`;
a switch `--join-by-user-id` / `--no-join-by-user-id` is `true`/`false`; a
repeatable option (`--kafka-config k=v`) is a list, one item per line, or
on one line separated by commas (see `split_list`).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Any, Mapping

from protosessions.config import (EVICTION_STRATEGIES, IDENTITY_RULES, INPUT_FORMATS,
                                  SESSION_HITS, Settings)
from protosessions.units import parse_duration_us, parse_size

ENV_PREFIX = "PROTOSESSIONS_"


@dataclass(frozen=True)
class Option:
    name: str  # flag without dashes, e.g. "session-duration"
    default: Any
    help: str
    kind: str = "str"  # str | int | bool | list | duration (a run's own, in microseconds)
    engine: bool = False  # part of `Settings`
    choices: tuple[str, ...] = ()  # the only values allowed (kind str), shown in help

    @property
    def dest(self) -> str:
        return self.name.replace("-", "_")

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.dest.upper()


OPTIONS: tuple[Option, ...] = (
    Option("input", (), "JSONL file of hits, or - for stdin (file mode); repeat it to read "
           "several files as partitions of one time merge", "list"),
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
    Option("eviction-strategy", "rewrite", "rewrite: re-point the hit; evict: also move its "
           "client's open proto-session into the owner (Kafka only)", engine=True,
           choices=EVICTION_STRATEGIES),
    Option("compaction-threshold", "64KiB", "buffered bytes past which a proto-session is compressed", engine=True),
    Option("max-hit-bytes", "65536", "larger hits are rejected (too_large)", engine=True),
    Option("max-future-skew", "10m", "hits further ahead of the wall clock are rejected", engine=True),
    Option("session-hits", "full", "a session record's hits: full (the hits), ids (their ids) "
           "or none (left out)", engine=True, choices=SESSION_HITS),
    Option("input-format", "spec", "how a hit is written: spec (SPEC table) or d8a (as d8a's "
           "receiver publishes it; sessions' hits are written back in that form)", engine=True,
           choices=INPUT_FORMATS),
    Option("identity-rules", "classic", "classic (stamp = sessionStamp or IP, one join key) or "
           "d8a (d8a v1.4: stamp of fss or headers, IP, property and day; user ID and stamp "
           "both claimed)", engine=True, choices=IDENTITY_RULES),
    Option("shards", 64, "key groups of the session step; keep it fixed across resumes", "int", engine=True),
    Option("identity-shards", 16, "key groups of the identity step (by join key); keep it fixed "
           "across resumes", "int", engine=True),
    Option("kafka-brokers", None, "HOST:PORT[,HOST:PORT]: run on Kafka instead of files"),
    Option("hits-topic", "hits", "Kafka topic to read hits from"),
    Option("sessions-topic", "sessions", "Kafka topic to write sessions to"),
    Option("dead-letter-topic", "hits.dead", "Kafka topic to write rejected hits to"),
    Option("kafka-config", (), "librdkafka setting key=value (repeatable)", "list"),
    Option("kafka-timeout", "30s", "Kafka: how long the start waits for the broker to answer and "
           "show the hits, sessions and dead-letter topics; past it the run fails (exit 2)",
           "duration"),
    Option("skip-catching-up", False, "after downtime, start the clock at wall time", "bool"),
    Option("until-end", False, "Kafka: read the hits topic to its current end, then close "
           "everything as end_of_input and stop, like a file (backfills, tests)", "bool"),
    Option("recovery-dir", None, "Bytewax recovery directory (see `protosessions recovery init`)"),
    Option("snapshot-interval", "10s", "how often state is snapshotted (Bytewax epoch)", "duration"),
    Option("backup-interval", "0s", "how long old snapshots are kept for", "duration"),
    Option("memory-budget", "0", "with a recovery directory: bytes of compressed hits a process "
           "keeps in RAM, e.g. 512MiB; past it the hits of the proto-sessions sealed longest ago "
           "live only in the state store on disk, read back when they close (0: no limit)"),
    Option("batch-size", 2000, "hits read per batch", "int"),
    Option("max-held-hits", 200000, "hits a process may hold back for the time merge before "
           "it pauses reading the partitions that are ahead", "int"),
)

BY_DEST = {o.dest: o for o in OPTIONS}
NO_STORE_FOR_BUDGET = ("--memory-budget needs --recovery-dir: the hits it moves out of memory "
                       "live in the recovery directory's state store")


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
    """`["k=v", ...]` -> dict, each pair one librdkafka accepts (see
    `check_kafka_setting`). Errors never show a value: one may be a secret,
    or a piece of one that a comma split (the one-line form of
    `PROTOSESSIONS_KAFKA_CONFIG` cannot hold a comma, so such a piece is
    refused rather than guessed at)."""
    conf: dict[str, str] = {}
    for n, pair in enumerate(pairs, 1):
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--kafka-config / PROTOSESSIONS_KAFKA_CONFIG: item {n} is not key=value "
                             "(not shown; on one line items are split at commas, so a value with "
                             "a comma needs one key=value per line)")
        conf[key.strip()] = value.strip()
    shown = True  # the item after a secret may be a piece of it that a comma split off
    for key, value in conf.items():
        check_kafka_setting(key, value, shown)
        shown = not is_secret(key)
    return conf


_SECRET_WORDS = ("password", "secret", "token", "key", "credential")
_PROBE = "protosessions.probe"  # no librdkafka property has this name
# Settings confluent_kafka takes itself, as Python objects (callbacks, a logger).
_PYTHON_OBJECTS = frozenset(("logger", "error_cb", "throttle_cb", "stats_cb", "oauth_cb",
                             "on_delivery", "on_commit", "default.topic.config"))


def is_secret(key: str) -> bool:
    """Whether a setting's value must never be printed."""
    return any(word in key.lower() for word in _SECRET_WORDS)


def check_kafka_setting(key: str, value: str, shown: bool = True) -> None:
    """ValueError unless librdkafka knows `key` and takes `value` (so a typo
    is refused in file mode too, where no client would ever read it).

    Exact and cheap: confluent_kafka sets the properties in order before it
    creates any client, so `{key: value, _PROBE: ""}` fails on `_PROBE`
    exactly when librdkafka accepted the pair."""
    from confluent_kafka import KafkaException, Producer

    if key in _PYTHON_OBJECTS:
        raise ValueError(f"--kafka-config {key}: takes a Python object, not text")
    try:
        Producer({key: value, _PROBE: ""})
    except KafkaException as e:
        if _PROBE in str(e.args[0]):
            return
        reason = f" ({e.args[0].str()})" if shown and not is_secret(key) else ""
    except Exception:  # confluent_kafka refused it before librdkafka saw it
        reason = ""
    else:  # not reached: the probe's name is unknown to librdkafka
        return
    name = key if shown else "(the setting after a secret; not shown)"
    raise ValueError(f"--kafka-config {name}: librdkafka does not accept it{reason}")


def weakened_delivery(conf: Mapping[str, str]) -> str | None:
    """The setting, if any, that would let the sink lose or duplicate
    sessions: acks other than all (every alias, `topic.` prefix and value
    librdkafka takes), or idempotence other than on."""
    for key, value in conf.items():
        name = key.removeprefix("topic.")
        v = value.strip().lower()
        if name in ("acks", "request.required.acks") and v not in ("all", "-1"):
            return key
        if name == "enable.idempotence" and v not in ("true", "t", "1"):
            return key
    return None


def unknown_env(environ: Mapping[str, str] | None = None) -> list[str]:
    """`PROTOSESSIONS_*` variables that no option reads (a typo would
    otherwise silently leave an option at its default)."""
    environ = os.environ if environ is None else environ
    known = {o.env for o in OPTIONS} | {ENV_PREFIX + "DEBUG", ENV_PREFIX + "TEST_KAFKA"}
    return sorted(k for k, v in environ.items()
                  if k.startswith(ENV_PREFIX) and k not in known and not service_link(k, v))


# What Kubernetes puts into a pod for each Service of its namespace (unless
# enableServiceLinks is false): PROTOSESSIONS_METRICS_SERVICE_HOST=198.19.0.7,
# ..._SERVICE_PORT[_API]=3030, ..._PORT=tcp://198.19.0.7:3030,
# ..._PORT_3030_TCP[_PROTO|_PORT|_ADDR]=... for the Service protosessions-metrics.
_LINK_VALUE = {
    "SERVICE_HOST": r"[0-9a-fA-F.:]+", "SERVICE_PORT": r"\d+", "PORT": r"(tcp|udp|sctp)://\S+",
    "TCP": r"(tcp|udp|sctp)://\S+", "UDP": r"(tcp|udp|sctp)://\S+", "SCTP": r"(tcp|udp|sctp)://\S+",
    "PROTO": r"tcp|udp|sctp", "ADDR": r"[0-9a-fA-F.:]+",
}
_LINK_NAME = re.compile(r"_(?:(SERVICE_HOST)|(SERVICE_PORT)(?:_[A-Z0-9_]+)?|(PORT)"
                        r"|PORT_\d+_(TCP|UDP|SCTP)|PORT_\d+_(?:TCP|UDP|SCTP)_(PROTO|PORT|ADDR))$")


def service_link(name: str, value: str) -> bool:
    """Whether `name=value` is one of Kubernetes' service-link variables."""
    m = _LINK_NAME.search(name)
    if not m:
        return False
    kind = next(g for g in m.groups() if g)
    pattern = r"\d+" if kind == "PORT" and name.endswith(("_TCP_PORT", "_UDP_PORT", "_SCTP_PORT")) \
        else _LINK_VALUE[kind]
    return re.fullmatch(pattern, value) is not None


def duration_us(option: Option, text: Any) -> int:
    """A `duration` option's text in microseconds; the one place a run's own
    durations are parsed (ValueError as `protosessions run` words it)."""
    try:
        return parse_duration_us(text)
    except ValueError as e:
        if option.dest == "kafka_timeout":
            raise ValueError(f"--kafka-timeout: {e}") from None
        raise


# Options a `RunConfig` holds typed, not as text: the engine's (in
# `settings`), the run's durations (`<name>_us`) and the Kafka settings.
TYPED = frozenset({o.dest for o in OPTIONS if o.engine or o.kind == "duration"} | {"kafka_config"})


@dataclass
class RunConfig:
    """Everything a run needs, parsed once where the command line or the
    environment is read (`from_values`): engine settings in microseconds and
    bytes (`settings`), the run's own durations in microseconds, the
    librdkafka settings as a dict. Below it nothing parses a duration or a size.

    `values` keeps the options as given: the resume record compares that
    text (`flows.recovery.resume_record`), and the other options (paths,
    topics, counts) are read from it by name."""

    settings: Settings = field(default_factory=Settings)
    values: dict[str, Any] = field(default_factory=dict)
    kafka_timeout_us: int = parse_duration_us(BY_DEST["kafka_timeout"].default)
    snapshot_interval_us: int = parse_duration_us(BY_DEST["snapshot_interval"].default)
    backup_interval_us: int = parse_duration_us(BY_DEST["backup_interval"].default)
    kafka_settings: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_values(cls, values: Mapping[str, Any]) -> "RunConfig":
        """Parse option values (text, as flags or variables give them); a
        ValueError says which is wrong, in one line."""
        settings = engine_settings(values)
        typed = {o.dest + "_us": duration_us(o, values.get(o.dest, o.default))
                 for o in OPTIONS if o.kind == "duration"}
        conf = kafka_config(tuple(values.get("kafka_config") or ()))
        return cls(settings, dict(values), kafka_settings=conf, **typed)

    def __getattr__(self, name: str) -> Any:
        """Option values by name; an option not given has its default. The
        typed ones are refused: read `settings`, `<name>_us` or `kafka_settings`."""
        values = self.__dict__["values"]
        if name in TYPED:
            raise AttributeError(f"RunConfig.{name} is parsed: read settings.{name}(_us), "
                                 f"{name}_us or kafka_settings; given() has the text")
        if name in values:
            return values[name]
        if name in BY_DEST:
            return BY_DEST[name].default
        raise AttributeError(name)

    def given(self, name: str) -> Any:
        """An option as it was given (its default if it was not)."""
        return self.values.get(name, BY_DEST[name].default)

    @property
    def streaming(self) -> bool:
        return bool(self.values.get("kafka_brokers"))

    def memory_budget_bytes(self) -> int:
        """`--memory-budget` in bytes (ValueError, one line, if it is not a size)."""
        try:
            return parse_size(str(self.memory_budget))
        except ValueError as e:
            raise ValueError(f"--memory-budget: {e}") from None

    def check(self) -> None:
        """Refuse combinations that cannot work (ValueError, one line)."""
        self.memory_budget_bytes()
        if self.settings.eviction_strategy == "evict" and not self.streaming:
            raise ValueError("--eviction-strategy evict re-queues hits through the Kafka hits "
                             "topic: it needs --kafka-brokers")
        if self.max_held_hits < 1:
            raise ValueError("--max-held-hits must be at least 1")
        inputs = [os.path.abspath(p) if p != "-" else p for p in self.input]
        if len(set(inputs)) != len(inputs):
            raise ValueError("--input: the same file is given twice")
        if self.kafka_timeout_us <= 0:
            raise ValueError("--kafka-timeout must be more than 0s")
        weak = weakened_delivery(self.kafka_settings)
        if weak:
            raise ValueError(f"--kafka-config {weak} would allow lost or duplicated sessions: "
                             "the sink needs enable.idempotence=true and acks=all (leave both unset)")
