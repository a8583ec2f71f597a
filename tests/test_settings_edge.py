"""Settings are parsed once, where the command line or the environment is
read: `RunConfig` holds microseconds, bytes and typed values, and nothing
below it parses a duration, a size or a Kafka setting again."""

from __future__ import annotations

import ast
import contextlib
import io
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from flows import recovery, runner
from flows.cli import _run_values, build_parser, main
from flows.options import OPTIONS, RunConfig, from_env

ROOT = Path(__file__).resolve().parent.parent
S = 1_000_000

# The functions that turn option text into values, and the modules allowed
# to call them: the edges (command line, environment, the pods' launcher)
# and the parsers' own modules.
PARSERS = frozenset(("parse_duration_us", "parse_size", "from_strings", "engine_settings",
                     "duration_us", "kafka_config"))
EDGES = frozenset(("flows/cli.py", "flows/options.py", "flows/launch.py",
                   "protosessions/units.py", "protosessions/config.py"))


def parser_uses(source: str) -> list[str]:
    """Names of `PARSERS` a module's source refers to (calls, attributes, imports)."""
    used = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Name) and node.id in PARSERS:
            used.append(node.id)
        elif isinstance(node, ast.Attribute) and node.attr in PARSERS:
            used.append(node.attr)
        elif isinstance(node, ast.alias) and node.name.rpartition(".")[2] in PARSERS:
            used.append(node.name)
    return used


def test_no_module_below_the_edge_parses_settings() -> None:
    checked = 0
    for package in ("flows", "protosessions"):
        for path in sorted((ROOT / package).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            if rel in EDGES:
                continue
            checked += 1
            assert parser_uses(path.read_text()) == [], f"{rel} parses option text"
    assert checked > 30


def test_the_parser_check_sees_calls_attributes_and_imports() -> None:
    assert parser_uses("from protosessions.units import parse_duration_us as p\n") == [
        "parse_duration_us"]
    assert parser_uses("import protosessions.units as u\nu.parse_size('1B')\n") == ["parse_size"]
    assert parser_uses("def f(c):\n    return Settings.from_strings(**c)\n") == ["from_strings"]
    assert parser_uses("x = config.snapshot_interval_us\n") == []


def config(*argv: str, env: dict[str, str] | None = None) -> RunConfig:
    """A `RunConfig` as `protosessions run` builds it, with `env` as the environment."""
    saved = dict(os.environ)
    try:
        os.environ.update(env or {})
        args = build_parser().parse_args(["run", *argv])
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return RunConfig.from_values(_run_values(args))


def test_the_defaults_are_typed() -> None:
    c = config()
    assert (c.kafka_timeout_us, c.snapshot_interval_us, c.backup_interval_us) == (30 * S, 10 * S, 0)
    s = c.settings
    assert (s.session_duration_us, s.tick_interval_us, s.max_duration_us) == (1800 * S, S, 86400 * S)
    assert (s.allowed_lateness_us, s.max_future_skew_us) == (0, 600 * S)
    assert (s.compaction_threshold, s.max_hit_bytes) == (64 * 1024, 65536)
    assert c.kafka_settings == {}
    # Built directly (as tests do), a config has the same defaults.
    d = RunConfig()
    assert (d.kafka_timeout_us, d.snapshot_interval_us, d.backup_interval_us) == (30 * S, 10 * S, 0)


@pytest.mark.parametrize("flag, text, field, want", [
    ("--snapshot-interval", "1.5s", "snapshot_interval_us", 1_500_000),
    ("--snapshot-interval", " 2m ", "snapshot_interval_us", 120 * S),
    ("--snapshot-interval", "0s", "snapshot_interval_us", 0),  # Bytewax takes it
    ("--backup-interval", "1d", "backup_interval_us", 86400 * S),
    ("--kafka-timeout", "500ms", "kafka_timeout_us", 500_000),
    ("--kafka-timeout", "250us", "kafka_timeout_us", 250),
])
def test_run_durations_in_microseconds(flag: str, text: str, field: str, want: int) -> None:
    assert getattr(config(flag, text), field) == want


@pytest.mark.parametrize("flag, text, field, want", [
    ("--compaction-threshold", "0", "compaction_threshold", 0),
    ("--compaction-threshold", "1MB", "compaction_threshold", 1_000_000),
    ("--max-hit-bytes", "1MiB", "max_hit_bytes", 1024 * 1024),
    ("--max-hit-bytes", "7B", "max_hit_bytes", 7),
    ("--session-duration", "0.5s", "session_duration_us", 500_000),
    ("--tick-interval", "0s", "tick_interval_us", 0),
    ("--max-future-skew", "36h", "max_future_skew_us", 36 * 3600 * S),
])
def test_engine_values_in_microseconds_and_bytes(flag: str, text: str, field: str, want: int) -> None:
    assert getattr(config(flag, text).settings, field) == want


def test_the_environment_is_parsed_the_same_and_a_flag_wins() -> None:
    env = {"PROTOSESSIONS_SNAPSHOT_INTERVAL": "3s", "PROTOSESSIONS_SESSION_DURATION": "5m",
           "PROTOSESSIONS_KAFKA_CONFIG": "client.id=a\nlinger.ms=5",
           "PROTOSESSIONS_MAX_HIT_BYTES": "2KiB"}
    c = config(env=env)
    assert c.snapshot_interval_us == 3 * S and c.settings.session_duration_us == 300 * S
    assert c.settings.max_hit_bytes == 2048
    assert c.kafka_settings == {"client.id": "a", "linger.ms": "5"}
    assert config("--snapshot-interval", "4s", env=env).snapshot_interval_us == 4 * S
    # What the launcher (`flows.sessions:flow`) builds from the same variables.
    flow_config = RunConfig.from_values(from_env(env))
    assert flow_config.snapshot_interval_us == 3 * S
    assert flow_config.settings == c.settings


def test_parsed_options_are_not_read_as_text() -> None:
    """Reading `config.snapshot_interval` would invite parsing it again."""
    c = config("--snapshot-interval", "2s")
    for o in OPTIONS:
        if o.engine or o.kind == "duration" or o.dest == "kafka_config":
            with pytest.raises(AttributeError):
                getattr(c, o.dest)
    assert c.given("snapshot_interval") == "2s" and c.given("session_duration") == "30m"
    assert c.batch_size == 2000 and c.workers == 1  # the others are plain values


def test_the_resume_record_keeps_the_text_as_given(tmp_path: Path) -> None:
    """Stores written before keep matching: the record holds the flags' text."""
    record = recovery.resume_record(config("--session-duration", "45m", "--shards", "8"))
    assert record["session_duration"] == "45m" and record["shards"] == 8
    assert record["max_duration"] == "24h" and record["allowed_lateness"] == "0s"


def test_the_run_hands_bytewax_the_parsed_intervals(tmp_path: Path, monkeypatch) -> None:
    seen = {}

    def fake_cli_main(flow, **kwargs):
        seen.update(kwargs)

    store = tmp_path / "rec"
    recovery.init(str(store), 1)
    monkeypatch.setattr(runner, "cli_main", fake_cli_main)
    c = config("--snapshot-interval", "2.5s", "--backup-interval", "1m",
               "--recovery-dir", str(store), "--output", os.devnull)
    assert runner.run(c) is None
    assert seen["epoch_interval"] == timedelta(seconds=2.5)
    assert seen["recovery_config"].backup_interval == timedelta(minutes=1)
    assert seen["workers_per_process"] == 1


R = ("run", "--input", os.devnull, "--output", os.devnull)
BAD_DURATION = "bad duration {!r}: write e.g. 500ms, 5s, 30m, 24h"
BAD_SIZE = "bad size {!r}: write e.g. 65536, 64KiB, 1MiB"


@pytest.mark.parametrize("argv, env, message", [
    ((*R, "--session-duration", "bad"), {}, "protosessions run: " + BAD_DURATION.format("bad")),
    ((*R, "--session-duration", "0s"), {}, "protosessions run: session duration must be positive"),
    ((*R, "--allowed-lateness", "5"), {}, "protosessions run: " + BAD_DURATION.format("5")),
    ((*R, "--max-duration", "1y"), {}, "protosessions run: " + BAD_DURATION.format("1y")),
    ((*R, "--max-hit-bytes", "1.5KiB"), {}, "protosessions run: " + BAD_SIZE.format("1.5KiB")),
    ((*R, "--max-hit-bytes", "0"), {},
     "protosessions run: compaction threshold must be >= 0 and max hit bytes >= 1"),
    ((*R, "--snapshot-interval", "bad"), {}, "protosessions run: " + BAD_DURATION.format("bad")),
    ((*R, "--backup-interval", "-1s"), {}, "protosessions run: argument --backup-interval: "
     "expected one argument"),
    ((*R, "--kafka-timeout", "bad"), {},
     "protosessions run: --kafka-timeout: " + BAD_DURATION.format("bad")),
    ((*R, "--kafka-timeout", "0s"), {}, "protosessions run: --kafka-timeout must be more than 0s"),
    (R, {"PROTOSESSIONS_SNAPSHOT_INTERVAL": "1 week"},
     "protosessions run: " + BAD_DURATION.format("1 week")),
    (R, {"PROTOSESSIONS_COMPACTION_THRESHOLD": "-1"}, "protosessions run: " + BAD_SIZE.format("-1")),
    (R, {"PROTOSESSIONS_KAFKA_TIMEOUT": "0s"},
     "protosessions run: --kafka-timeout must be more than 0s"),
    (R, {"PROTOSESSIONS_WORKERS": "x"}, "protosessions: PROTOSESSIONS_WORKERS: not an integer: 'x'"),
    ((*R, "--memory-budget", "lots"), {},
     "protosessions run: --memory-budget: " + BAD_SIZE.format("lots")),
    ((*R, "--memory-budget", "64MiB"), {}, "protosessions run: --memory-budget needs --recovery-dir: "
     "the hits it moves out of memory live in the recovery directory's state store"),
    (("topics", "create", "--kafka-brokers", "localhost:1", "--kafka-timeout", "soon"), {},
     "protosessions topics create: --kafka-timeout: " + BAD_DURATION.format("soon")),
    (("generate", "--kafka-brokers", "localhost:1", "--rate", "1", "--duration", "0s"), {},
     "protosessions generate: --duration must be more than 0s"),
])
def test_bad_values_get_the_one_line_they_always_got(argv, env, message, monkeypatch) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        assert main(list(argv)) == 2
    assert err.getvalue() == message + "\n"


def test_the_launcher_refuses_a_memory_budget_without_a_store_in_one_line() -> None:
    env = {**os.environ, "PROTOSESSIONS_MEMORY_BUDGET": "64MiB"}
    env.pop("BYTEWAX_RECOVERY_DIRECTORY", None)
    proc = subprocess.run([sys.executable, "-m", "bytewax.run", "flows.sessions:flow"], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "flows.sessions:flow: --memory-budget needs --recovery-dir: the hits it moves out of "
        "memory live in the recovery directory's state store"]


def test_the_launcher_refuses_a_bad_variable_in_one_line() -> None:
    """`python -m bytewax.run flows.sessions:flow` reads the same variables:
    a wrong one is one line and exit code 2, not a traceback."""
    env = {**os.environ, "PROTOSESSIONS_SESSION_DURATION": "soon"}
    proc = subprocess.run([sys.executable, "-m", "bytewax.run", "flows.sessions:flow"], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == ["flows.sessions:flow: " + BAD_DURATION.format("soon")]
