"""`protosessions` command line: run the dataflow, generate hits, manage topics and recovery.

Every failure the user can fix (a bad flag, an unreadable file, a recovery
directory that was never initialised) is one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from typing import Any, Sequence

from . import stats
from .options import OPTIONS, from_env, parse_bool, split_list
from .units import parse_duration_us


class UsageError(Exception):
    """A problem the user fixes by changing the command (exit code 2)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, no usage dump
        raise UsageError(f"{self.prog}: {message}")


def _add_run_options(p: argparse.ArgumentParser) -> None:
    env = from_env()
    for o in OPTIONS:
        flag = "--" + o.name
        default = env[o.dest]
        hint = f"{o.help} [env {o.env}; default {default!r}]"
        if o.kind == "bool":
            p.add_argument(flag, dest=o.dest, action=argparse.BooleanOptionalAction,
                           default=default, help=hint)
        elif o.kind == "list":
            p.add_argument(flag, dest=o.dest, action="append", default=None, help=hint)
            p.set_defaults(**{o.dest + "_env": list(default)})
        elif o.kind == "int":
            p.add_argument(flag, dest=o.dest, type=int, default=default, help=hint)
        else:
            p.add_argument(flag, dest=o.dest, default=default, help=hint,
                           choices=o.choices or None)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="protosessions", description="GA4-style hits to sessions on Bytewax.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    run = sub.add_parser("run", help="sessionise hits from a JSONL file or Kafka")
    _add_run_options(run)

    gen = sub.add_parser("generate", help="write realistic GA4-like hits as JSONL")
    gen.add_argument("--hits", type=int, required=True)
    gen.add_argument("--clients", type=int, required=True)
    gen.add_argument("--seed", type=int, default=1)
    gen.add_argument("--output", default="-", help="file, or - for stdout")

    topics = sub.add_parser("topics", help="Kafka topics")
    tsub = topics.add_subparsers(dest="topics_command", required=True, parser_class=_Parser)
    create = tsub.add_parser("create", help="create the hits, sessions and dead-letter topics (idempotent)")
    create.add_argument("--kafka-brokers", default=os.environ.get("PROTOSESSIONS_KAFKA_BROKERS"), required=False)
    create.add_argument("--partitions", type=int, default=3)
    create.add_argument("--replication-factor", type=int, default=1)
    create.add_argument("--hits-topic", default=os.environ.get("PROTOSESSIONS_HITS_TOPIC", "hits"))
    create.add_argument("--sessions-topic", default=os.environ.get("PROTOSESSIONS_SESSIONS_TOPIC", "sessions"))
    create.add_argument("--dead-letter-topic", default=os.environ.get("PROTOSESSIONS_DEAD_LETTER_TOPIC", "hits.dead"))
    create.add_argument("--kafka-config", action="append",
                        default=list(split_list(os.environ.get("PROTOSESSIONS_KAFKA_CONFIG", ""))))

    rec = sub.add_parser("recovery", help="Bytewax recovery directory")
    rsub = rec.add_subparsers(dest="recovery_command", required=True, parser_class=_Parser)
    init = rsub.add_parser("init", help="create the recovery partitions")
    init.add_argument("dir")
    init.add_argument("--partitions", type=int, required=True)
    return parser


def _run_values(args: argparse.Namespace) -> dict[str, Any]:
    values = {o.dest: getattr(args, o.dest) for o in OPTIONS}
    if values["kafka_config"] is None:
        values["kafka_config"] = tuple(getattr(args, "kafka_config_env", ()))
    for o in OPTIONS:
        if o.kind == "bool" and isinstance(values[o.dest], str):
            values[o.dest] = parse_bool(values[o.dest])
    return values


class Progress:
    """Prints counts to stderr every few seconds while a run goes on."""

    def __init__(self, every: float = 5.0) -> None:
        self.every = every
        self.start = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> "Progress":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _loop(self) -> None:
        while not self._stop.wait(self.every):
            t = stats.totals()
            secs = time.monotonic() - self.start
            print(f"protosessions: {t['hits_read']} hits read, {_closed(t)} sessions, "
                  f"{t['dead_letters']} dead letters, {secs:.0f}s", file=sys.stderr, flush=True)


def _closed(t: dict) -> int:
    return sum(v for k, v in t.items() if k.startswith("closed:"))


def summary_line(t: dict, seconds: float) -> str:
    reasons = ", ".join(f"{k[7:]} {v}" for k, v in sorted(t.items()) if k.startswith("closed:"))
    rate = t["hits_read"] / seconds if seconds > 0 else 0.0
    return (f"protosessions: {t['hits_read']} hits read, {_closed(t)} sessions"
            f" ({reasons or 'none'}), {t['dead_letters']} dead letters,"
            f" {t['duplicates']} duplicates, {seconds:.2f}s, {rate:.0f} hits/s")


def cmd_run(args: argparse.Namespace) -> int:
    from .options import RunConfig

    try:
        config = RunConfig.from_values(_run_values(args))
        config.check()
        parse_duration_us(config.snapshot_interval)
        parse_duration_us(config.backup_interval)
    except ValueError as e:
        raise UsageError(f"protosessions run: {e}") from None
    if config.workers < 1:
        raise UsageError("protosessions run: --workers must be at least 1")
    if not config.streaming:
        _check_file_io(config)
    from bytewax.errors import BytewaxRuntimeError

    from flows.recovery import RecoveryError
    from flows.runner import run  # Bytewax is imported only to run

    stats.reset()
    start = time.monotonic()
    try:
        with Progress():
            run(config)
    except RecoveryError as e:
        raise UsageError(f"protosessions run: {e}") from None
    except BytewaxRuntimeError as e:  # the dataflow failed: say why in one line
        if os.environ.get("PROTOSESSIONS_DEBUG"):
            raise
        print(f"protosessions run: the dataflow failed: {_root_cause(e)} "
              "(PROTOSESSIONS_DEBUG=1 shows the traceback)", file=sys.stderr)
        return 1
    print(summary_line(stats.totals(), time.monotonic() - start), file=sys.stderr)
    return 0


def _root_cause(e: BaseException) -> str:
    while e.__cause__ is not None or e.__context__ is not None:
        e = e.__cause__ or e.__context__  # type: ignore[assignment]
    return f"{type(e).__name__}: {e}".splitlines()[0]


def _check_file_io(config: Any) -> None:
    src = config.input
    if src and src != "-":
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
            if not config.recovery_dir:  # a fresh run starts empty files, even with nothing to write
                open(path, "wb").close()


def cmd_generate(args: argparse.Namespace) -> int:
    from .generate import write_hits

    if args.hits < 0 or args.clients < 1:
        raise UsageError("protosessions generate: --hits must be >= 0 and --clients >= 1")
    if args.output == "-":
        try:
            write_hits(sys.stdout.buffer, args.hits, args.clients, args.seed)
            sys.stdout.buffer.flush()
        except BrokenPipeError:  # `protosessions generate ... | head`
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    else:
        try:
            f = open(args.output, "wb")
        except OSError as e:
            raise UsageError(f"protosessions generate: cannot write {args.output}: {e.strerror}") from None
        with f:
            write_hits(f, args.hits, args.clients, args.seed)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
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
            from .topics import cmd_topics
            return cmd_topics(args)
        if args.command == "recovery":
            from flows.recovery import cmd_recovery
            return cmd_recovery(args)
    except UsageError as e:
        print(str(e), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 2


if __name__ == "__main__":
    sys.exit(main())
