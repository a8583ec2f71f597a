"""`protosessions` command line: run the dataflow, generate hits, manage topics and recovery.

Every failure the user can fix (a bad flag, an unreadable file, a recovery
directory that was never initialised, Kafka not reachable within
`--kafka-timeout` or without the job's topics) is one line on stderr and
exit code 2. A run stopped by SIGINT exits 130, by SIGTERM 0 (`flows.stop`).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import os
import signal
import sys
import time
from typing import Any, Sequence

from protosessions import stats
from protosessions.units import parse_duration_us

from .options import BY_DEST, OPTIONS, from_env, kafka_config, parse_bool, split_list
from .progress import Progress, final_line
from .usage import UsageError


class _Parser(argparse.ArgumentParser):
    """One-line errors; abbreviated flags refused (`--worker 2` is not `--workers 2`)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["allow_abbrev"] = False
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> None:  # one line, no usage dump
        raise UsageError(f"{self.prog}: {message}")


# `run --help` sections, in the order Bytewax's launcher would show them.
RUN_GROUPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("input and output", ("input", "output", "dead-letter", "input-format")),
    ("sessions", ("session-duration", "tick-interval", "max-events", "max-duration",
                  "allowed-lateness", "join-by-session-stamp", "join-by-user-id",
                  "eviction-strategy", "identity-rules", "session-hits", "max-hit-bytes", "max-future-skew")),
    ("Kafka", ("kafka-brokers", "hits-topic", "sessions-topic", "dead-letter-topic",
               "kafka-config", "kafka-timeout", "until-end", "skip-catching-up")),
    ("recovery", ("recovery-dir", "snapshot-interval", "backup-interval", "memory-budget")),
    ("tuning", ("workers", "batch-size", "shards", "identity-shards", "compaction-threshold",
                "max-held-hits")),
)

def run_group(name: str) -> str:
    """The `run --help` section of an option; "other" for one no section names."""
    for title, names in RUN_GROUPS:
        if name in names:
            return title
    return "other"


def _add_run_options(p: argparse.ArgumentParser) -> None:
    env = from_env()
    groups = {title: p.add_argument_group(title) for title, _ in RUN_GROUPS}
    for o in OPTIONS:
        g = groups.get(run_group(o.name)) or groups.setdefault("other", p.add_argument_group("other"))
        flag = "--" + o.name
        default = env[o.dest]
        choices = o.choices or None
        hint = f"{o.help} [env {o.env}; default {default!r}]"
        if o.kind == "list":  # e.g. --kafka-config: its pairs may hold a password
            hint = f"{o.help} [env {o.env}; default: none, or the variable's items, not shown]"
        if o.kind == "bool":
            g.add_argument(flag, dest=o.dest, action=argparse.BooleanOptionalAction,
                           default=default, help=hint)
        elif o.kind == "list":
            g.add_argument(flag, dest=o.dest, action="append", default=None, help=hint)
            p.set_defaults(**{o.dest + "_env": list(default)})
        elif o.kind == "int":
            g.add_argument(flag, dest=o.dest, type=int, default=default, help=hint)
        else:
            g.add_argument(flag, dest=o.dest, default=default, choices=choices, help=hint)


def _version() -> str:
    """The installed package's version (package metadata)."""
    try:
        return importlib.metadata.version("protosessions")
    except importlib.metadata.PackageNotFoundError:  # run from a source tree, not installed
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="protosessions", description="GA4-style hits to sessions on Bytewax.")
    parser.add_argument("--version", action="version", version=f"protosessions {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    run = sub.add_parser("run", help="sessionise hits from a JSONL file or Kafka")
    _add_run_options(run)

    gen = sub.add_parser(
        "generate", help="write realistic GA4-like hits as JSONL, or produce them live to Kafka",
        description="Realistic GA4-like hits. To a file (--hits N), or with --kafka-brokers "
                    "live to the hits topic at --rate hits per second, timestamped now.")
    gen.add_argument("--hits", type=int, default=None,
                     help="how many hits (required for a file; live: stop after that many; "
                          "default: none)")
    gen.add_argument("--clients", type=int, default=1000,
                     help="distinct client IDs (devices) (default: %(default)s)")
    gen.add_argument("--seed", type=int, default=1,
                     help="random seed; the same flags give the same hits (default: %(default)s)")
    gen.add_argument("--output", default="-", help="file, or - for stdout (default: %(default)s)")
    live = gen.add_argument_group("live to Kafka")
    live.add_argument("--kafka-brokers", default=None,
                      help="HOST:PORT[,HOST:PORT]: produce to Kafka instead of writing a file "
                           "(default: none, i.e. a file)")
    live.add_argument("--hits-topic", default=os.environ.get("PROTOSESSIONS_HITS_TOPIC", "hits"),
                      help="topic to produce to [env PROTOSESSIONS_HITS_TOPIC] (default: %(default)s)")
    live.add_argument("--rate", type=float, default=None,
                      help="hits per second (required with --kafka-brokers; no default)")
    live.add_argument("--duration", default=None,
                      help="stop after this long, e.g. 60s or 5m (default: until interrupted)")
    live.add_argument("--kafka-config", action="append", default=[],
                      help="librdkafka setting key=value, repeatable (default: none)")

    topics = sub.add_parser("topics", help="Kafka topics")
    tsub = topics.add_subparsers(dest="topics_command", required=True, parser_class=_Parser)
    create = tsub.add_parser("create", help="create the hits, sessions and dead-letter topics (idempotent)")
    create.add_argument("--kafka-brokers", default=os.environ.get("PROTOSESSIONS_KAFKA_BROKERS"), required=False,
                        help="HOST:PORT[,HOST:PORT] [env PROTOSESSIONS_KAFKA_BROKERS] (default: %(default)s)")
    create.add_argument("--partitions", type=int, default=3,
                        help="partitions of each topic (default: %(default)s)")
    create.add_argument("--replication-factor", type=int, default=1,
                        help="replicas of each partition (default: %(default)s)")
    create.add_argument("--hits-topic", default=os.environ.get("PROTOSESSIONS_HITS_TOPIC", "hits"),
                        help="topic of the hits [env PROTOSESSIONS_HITS_TOPIC] (default: %(default)s)")
    create.add_argument("--sessions-topic", default=os.environ.get("PROTOSESSIONS_SESSIONS_TOPIC", "sessions"),
                        help="topic of the sessions [env PROTOSESSIONS_SESSIONS_TOPIC] (default: %(default)s)")
    create.add_argument("--dead-letter-topic", default=os.environ.get("PROTOSESSIONS_DEAD_LETTER_TOPIC", "hits.dead"),
                        help="topic of rejected hits [env PROTOSESSIONS_DEAD_LETTER_TOPIC] (default: %(default)s)")
    create.add_argument("--kafka-config", action="append",
                        default=list(split_list(os.environ.get("PROTOSESSIONS_KAFKA_CONFIG", ""))),
                        help="librdkafka setting key=value, repeatable (default: none, or the pairs "
                             "in PROTOSESSIONS_KAFKA_CONFIG, not shown: they may hold secrets)")
    timeout = BY_DEST["kafka_timeout"]
    create.add_argument("--kafka-timeout", default=os.environ.get(timeout.env, timeout.default),
                        help=f"how long to wait for the broker before failing [env {timeout.env}] "
                             "(default: %(default)s)")

    bridge = sub.add_parser(
        "d8a-bridge", help="take d8a's worker's place on its filesystem queue: its hits to Kafka",
        description="Reads d8a's filesystem queue (the receiver's .task files) in name order, "
                    "produces each hit, in the d8a form, to the hits topic keyed by ClientID, and "
                    "deletes a task once every hit of it is acknowledged. Run the job with "
                    "--input-format d8a (docs/d8a.md).")
    bridge.add_argument("--queue", required=True,
                        help="d8a's queue directory (its receiver's queue directory; no default)")
    bridge.add_argument("--kafka-brokers", default=os.environ.get("PROTOSESSIONS_KAFKA_BROKERS"),
                        help="HOST:PORT[,HOST:PORT] [env PROTOSESSIONS_KAFKA_BROKERS] "
                             "(default: %(default)s)")
    bridge.add_argument("--hits-topic", default=os.environ.get("PROTOSESSIONS_HITS_TOPIC", "hits"),
                        help="topic to produce to [env PROTOSESSIONS_HITS_TOPIC] "
                             "(default: %(default)s)")
    bridge.add_argument("--poll-interval", default="500ms",
                        help="how often an empty queue is looked at again (default: %(default)s)")
    bridge.add_argument("--until-empty", action="store_true",
                        help="stop once the queue holds no task (default: follow it)")
    bridge.add_argument("--kafka-config", action="append",
                        default=list(split_list(os.environ.get("PROTOSESSIONS_KAFKA_CONFIG", ""))),
                        help="librdkafka setting key=value, repeatable (default: none, or the pairs "
                             "in PROTOSESSIONS_KAFKA_CONFIG, not shown: they may hold secrets)")
    bridge.add_argument("--kafka-timeout", default=os.environ.get(timeout.env, timeout.default),
                        help=f"how long the start waits for the broker and the topic [env "
                             f"{timeout.env}] (default: %(default)s)")

    rec = sub.add_parser("recovery", help="Bytewax recovery directory")
    rsub = rec.add_subparsers(dest="recovery_command", required=True, parser_class=_Parser)
    init = rsub.add_parser("init", help="create the recovery partitions")
    init.add_argument("dir", help="directory to create the partitions in")
    init.add_argument("--partitions", type=int, required=True,
                      help="how many SQLite partitions (no default: at least the largest total "
                           "worker count you will run with)")
    return parser


def _run_values(args: argparse.Namespace) -> dict[str, Any]:
    values = {o.dest: getattr(args, o.dest) for o in OPTIONS}
    for o in OPTIONS:  # a repeatable flag not given: the environment's list
        if o.kind == "list":
            values[o.dest] = tuple(values[o.dest] if values[o.dest] is not None
                                   else getattr(args, o.dest + "_env", ()))
    for o in OPTIONS:
        if o.kind == "bool" and isinstance(values[o.dest], str):
            values[o.dest] = parse_bool(values[o.dest])
    return values


NO_VALID_HIT = 1  # exit code: the input had lines, and not one was a valid hit


def cmd_run(args: argparse.Namespace) -> int:
    from .options import NO_STORE_FOR_BUDGET, RunConfig

    try:
        config = RunConfig.from_values(_run_values(args))
        config.check()
    except ValueError as e:
        raise UsageError(f"protosessions run: {e}") from None
    if config.workers < 1:
        raise UsageError("protosessions run: --workers must be at least 1")
    if config.memory_budget_bytes() and not config.recovery_dir:
        raise UsageError(f"protosessions run: {NO_STORE_FOR_BUDGET}")
    if not config.streaming:
        _check_file_io(config)
    from bytewax.errors import BytewaxRuntimeError

    from .kafka_admin import KafkaUnavailable
    from .files import atomic_outputs
    from .recovery import RecoveryError

    resumed = _prepare_recovery(config) if config.recovery_dir else False
    if not config.streaming and not config.input:
        from .sessions import sample_path
        print(f"protosessions run: no --input given: reading the bundled sample {sample_path()}",
              file=sys.stderr)
    from .runner import run  # Bytewax is imported only to run

    stats.reset()
    start = time.monotonic()
    # Without recovery, files are replaced only by a run that succeeds; with
    # it, they are resumed in place by byte offset.
    outputs = (atomic_outputs([config.output, config.dead_letter])
               if not config.recovery_dir and not config.streaming else contextlib.nullcontext())
    try:
        with outputs:
            stopped_by = run(config, Progress(config.sessions_topic if config.streaming else None))
    except (RecoveryError, KafkaUnavailable) as e:
        raise UsageError(f"protosessions run: {e}") from None
    except BytewaxRuntimeError as e:  # the dataflow failed: say why in one line
        if os.environ.get("PROTOSESSIONS_DEBUG"):
            raise
        print(f"protosessions run: the dataflow failed: {_root_cause(e)} "
              "(PROTOSESSIONS_DEBUG=1 shows the traceback)", file=sys.stderr)
        return 1
    totals = stats.totals()
    print(final_line(totals, time.monotonic() - start, stopped_by), file=sys.stderr)
    if stopped_by is not None:
        return 130 if stopped_by == signal.SIGINT else 0  # SIGTERM: a requested stop, not a failure
    if (not config.streaming and not resumed and totals["hits_read"]
            and totals["dead_letters"] == totals["hits_read"]):
        print(f"protosessions run: not one of the {totals['hits_read']} input lines is a valid hit "
              "(see the dead letters): is this a JSONL file of hits?", file=sys.stderr)
        return NO_VALID_HIT
    return 0


def _prepare_recovery(config: Any) -> bool:
    """Refuse a store this run cannot use or must not change, before anything
    is written (Bytewax would panic mid-run, or silently change the output);
    True when the run resumes one. File paths become absolute: Bytewax keys
    a file's state by its path, which must not depend on the directory."""
    from .recovery import (RecoveryError, check_resume, checked_recovery_config,
                                damaged_snapshot, resume_record)

    try:
        checked_recovery_config(config.recovery_dir, config.backup_interval_us)
        resumed = check_resume(config.recovery_dir, resume_record(config))
        damage = damaged_snapshot(config.recovery_dir) if resumed else None
    except RecoveryError as e:
        raise UsageError(f"protosessions run: {e}") from None
    if damage:
        raise UsageError(f"protosessions run: {damage}")
    if not config.streaming:
        config.values["input"] = tuple(p if p == "-" else os.path.abspath(p) for p in config.input)
        for name in ("output", "dead_letter"):
            path = config.values.get(name)
            if path and path != "-":
                config.values[name] = os.path.abspath(path)
    return resumed


def _root_cause(e: BaseException) -> str:
    while e.__cause__ is not None or e.__context__ is not None:
        e = e.__cause__ or e.__context__  # type: ignore[assignment]
    return f"{type(e).__name__}: {e}".splitlines()[0]


def _check_file_io(config: Any) -> None:
    """Every file location, checked before any is opened: a bad one must not
    cost the data in another (nothing is truncated here; see `atomic_outputs`)."""
    for src in config.input:
        if src == "-":
            continue
        try:
            with open(src, "rb"):
                pass
        except OSError as e:
            raise UsageError(f"protosessions run: cannot read --input {src}: {e.strerror}") from None
    for flag, path in (("--output", config.output), ("--dead-letter", config.dead_letter)):
        if path and path != "-":
            parent = os.path.dirname(os.path.abspath(path))
            if not os.path.isdir(parent) or not os.access(parent, os.W_OK):
                raise UsageError(f"protosessions run: cannot write {flag} {path}: "
                                 "its directory does not exist or is not writable")
            if os.path.isdir(path) or (os.path.exists(path) and not os.access(path, os.W_OK)):
                raise UsageError(f"protosessions run: cannot write {flag} {path}: "
                                 "it is a directory or not writable")
    out, dead = config.output, config.dead_letter
    if (out and dead and out != "-" and os.path.realpath(out) == os.path.realpath(dead)
            and (os.path.isfile(out) or not os.path.exists(out))):  # /dev/null may be shared
        raise UsageError("protosessions run: --output and --dead-letter are the same file: "
                         "two writers would interleave in it")


def cmd_generate(args: argparse.Namespace) -> int:
    """`generate`: hits to a file or stdout, or live to Kafka; a summary line on stderr."""
    if args.clients < 1:
        raise UsageError("protosessions generate: --clients must be >= 1")
    if args.hits is not None and args.hits < 0:
        raise UsageError("protosessions generate: --hits must be >= 0")
    if args.kafka_brokers:
        return _generate_live(args)
    for flag, value in (("--rate", args.rate), ("--duration", args.duration),
                        ("--kafka-config", args.kafka_config or None)):
        if value is not None:
            raise UsageError(f"protosessions generate: {flag} needs --kafka-brokers")
    if args.hits is None:
        raise UsageError("protosessions generate: --hits is required (or --kafka-brokers and --rate)")
    from protosessions.generate import write_hits

    start = time.monotonic()
    if args.output == "-":
        try:
            written = write_hits(sys.stdout.buffer, args.hits, args.clients, args.seed)
            sys.stdout.buffer.flush()
        except BrokenPipeError:  # `protosessions generate ... | head`
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 0
    else:
        try:
            f = open(args.output, "wb")
        except OSError as e:
            raise UsageError(f"protosessions generate: cannot write {args.output}: {e.strerror}") from None
        with f:
            written = write_hits(f, args.hits, args.clients, args.seed)
    where = "stdout" if args.output == "-" else args.output
    print(f"protosessions generate: {written} hits from {args.clients} clients (seed {args.seed}) "
          f"to {where}, {time.monotonic() - start:.2f}s", file=sys.stderr)
    return 0


def _generate_live(args: argparse.Namespace) -> int:
    """`generate --kafka-brokers`: hits produced in real time (flows.live_generate)."""
    if args.output != "-":
        raise UsageError("protosessions generate: --output and --kafka-brokers exclude each other")
    if args.rate is None or not args.rate > 0:
        raise UsageError("protosessions generate: --kafka-brokers needs --rate (hits per second, > 0)")
    try:
        duration_s = None if args.duration is None else parse_duration_us(args.duration) / 1e6
        conf = kafka_config(args.kafka_config)
    except ValueError as e:
        raise UsageError(f"protosessions generate: {e}") from None
    if duration_s is not None and duration_s <= 0:
        raise UsageError("protosessions generate: --duration must be more than 0s")
    from .live_generate import LiveGenerateError, produce_live

    try:
        result = produce_live(args.kafka_brokers, args.hits_topic, args.rate, duration_s=duration_s,
                              clients=args.clients, seed=args.seed, limit=args.hits, config=conf)
    except LiveGenerateError as e:
        raise UsageError(f"protosessions generate: {e}") from None
    print(result.summary(), file=sys.stderr)
    return 0 if result.ok else 1


def cmd_topics(args: argparse.Namespace) -> int:
    """`topics create`: each topic's name and whether it was created or existed."""
    if not args.kafka_brokers:
        raise UsageError("protosessions topics create: --kafka-brokers (or PROTOSESSIONS_KAFKA_BROKERS) is required")
    if args.partitions < 1 or args.replication_factor < 1:
        raise UsageError("protosessions topics create: --partitions and --replication-factor must be >= 1")
    try:
        conf = kafka_config(args.kafka_config)
    except ValueError as e:
        raise UsageError(f"protosessions topics create: {e}") from None
    names = [args.hits_topic, args.sessions_topic, args.dead_letter_topic]
    try:
        timeout_s = parse_duration_us(args.kafka_timeout) / 1e6
    except ValueError as e:
        raise UsageError(f"protosessions topics create: --kafka-timeout: {e}") from None
    from .kafka_admin import KafkaUnavailable
    from .topics import create_topics

    try:
        result = create_topics(args.kafka_brokers, names, args.partitions,
                               args.replication_factor, conf, timeout=timeout_s)
    except KafkaUnavailable as e:  # broker unreachable, not authorised...
        raise UsageError(f"protosessions topics create: {e}") from None
    for name in names:
        print(f"{name}: {result[name]}", file=sys.stderr)
    return 0


def _bridge_values(args: argparse.Namespace) -> tuple[float, float, dict[str, str]]:
    """`d8a-bridge`'s poll interval and Kafka timeout in seconds and its
    librdkafka settings, parsed here as every setting is (one line, exit 2)."""
    try:
        poll_s = parse_duration_us(args.poll_interval) / 1e6
        timeout_s = parse_duration_us(args.kafka_timeout) / 1e6
        conf = kafka_config(args.kafka_config or ())
    except ValueError as e:
        raise UsageError(f"protosessions d8a-bridge: {e}") from None
    return poll_s, timeout_s, conf


def _warn_unknown_env() -> None:
    from .options import unknown_env

    for name in unknown_env():
        print(f"protosessions: warning: {name} is not a protosessions setting (a typo?); ignored",
              file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    _warn_unknown_env()
    try:
        try:
            parser = build_parser()
        except ValueError as e:  # a PROTOSESSIONS_* variable that does not parse
            raise UsageError(f"protosessions: {e}") from None
        args = parser.parse_args(argv)
        if args.command == "run":
            return cmd_run(args)
        if args.command == "generate":
            return cmd_generate(args)
        if args.command == "topics":
            return cmd_topics(args)
        if args.command == "d8a-bridge":
            from .d8a_bridge import cmd_bridge
            return cmd_bridge(args, *_bridge_values(args))
        if args.command == "recovery":
            from .recovery import cmd_recovery
            return cmd_recovery(args)
    except UsageError as e:
        print(str(e), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 2


if __name__ == "__main__":
    sys.exit(main())
