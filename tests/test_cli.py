"""The command line as a user meets it: --version, refused abbreviations,
described flags, help sections, choices and the generate summary line."""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import subprocess
import sys

import pytest

from flows import cli
from flows.options import OPTIONS


def run_cli(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "flows.cli", *argv],
                          capture_output=True, text=True, timeout=120)


def subparser(*path: str) -> argparse.ArgumentParser:
    """The parser of `protosessions <path...>`."""
    parser = cli.build_parser()
    for name in path:
        (action,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        parser = action.choices[name]
    return parser


def test_version_is_the_package_version() -> None:
    out = run_cli("--version")
    assert out.returncode == 0
    assert out.stdout.strip() == f"protosessions {importlib.metadata.version('protosessions')}"


@pytest.mark.parametrize("argv", [
    ["run", "--worker", "2"],
    ["run", "--session-dur", "5s"],
    ["generate", "--hit", "5", "--clients", "2"],
    ["topics", "create", "--partition", "3"],
    ["recovery", "init", "/tmp/x", "--partitions", "2", "--part", "2"],
])
def test_abbreviated_flags_are_refused(argv: list[str], capsys: pytest.CaptureFixture) -> None:
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "unrecognized arguments" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("path", [("generate",), ("topics", "create"), ("recovery", "init")])
def test_every_flag_is_described_with_its_default(path: tuple[str, ...]) -> None:
    parser = subparser(*path)
    flags = [a for a in parser._actions if a.option_strings and a.dest != "help"]
    assert flags
    for a in flags:
        assert a.help and "default" in a.help, a.option_strings
    text = parser.format_help()
    for a in flags:
        assert a.option_strings[0] in text


def test_run_help_is_in_sections() -> None:
    text = subparser("run").format_help()
    titles = [title for title, _ in cli.RUN_GROUPS]
    section_of: dict[str, str] = {}  # flag -> the help section it is listed in
    shown: list[str] = []
    for block in text.split("\n\n"):
        title, _, body = block.partition(":\n")
        shown.append(title)
        for line in body.splitlines():
            if line.startswith("  --"):
                section_of[line.split()[0].rstrip(",")] = title
    assert [t for t in shown if t in titles] == titles
    assert "other" not in shown
    for o in OPTIONS:
        assert section_of["--" + o.name] == cli.run_group(o.name) != "other", o.name


def test_eviction_strategy_lists_and_checks_its_choices(capsys: pytest.CaptureFixture) -> None:
    assert "--eviction-strategy {rewrite,evict}" in subparser("run").format_help()
    assert cli.main(["run", "--eviction-strategy", "evcit"]) == 2
    assert "invalid choice: 'evcit'" in capsys.readouterr().err


def test_generate_to_a_file_prints_a_summary(tmp_path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "hits.jsonl"
    assert cli.main(["generate", "--hits", "50", "--clients", "5", "--seed", "3",
                     "--output", str(out)]) == 0
    assert len(out.read_bytes().splitlines()) == 50
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith(f"protosessions generate: 50 hits from 5 clients (seed 3) to {out},")


def test_generate_to_stdout_keeps_stdout_for_hits() -> None:
    out = run_cli("generate", "--hits", "20", "--clients", "4")
    assert out.returncode == 0
    assert len(out.stdout.splitlines()) == 20
    assert out.stderr.startswith("protosessions generate: 20 hits from 4 clients")


@pytest.mark.parametrize("argv, message", [
    (["generate", "--clients", "5"], "--hits is required"),
    (["generate", "--hits", "5", "--rate", "10"], "--rate needs --kafka-brokers"),
    (["generate", "--hits", "5", "--duration", "10s"], "--duration needs --kafka-brokers"),
    (["generate", "--kafka-brokers", "127.0.0.1:1"], "needs --rate"),
    (["generate", "--kafka-brokers", "127.0.0.1:1", "--rate", "0"], "needs --rate"),
    (["generate", "--kafka-brokers", "127.0.0.1:1", "--rate", "5", "--output", "x"],
     "exclude each other"),
    (["generate", "--kafka-brokers", "127.0.0.1:1", "--rate", "5", "--duration", "soon"],
     "duration"),
    (["generate", "--kafka-brokers", "127.0.0.1:1", "--rate", "5", "--kafka-config", "acks=1"],
     "acks=1"),
])
def test_generate_refuses_bad_combinations(argv: list[str], message: str,
                                           capsys: pytest.CaptureFixture) -> None:
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_progress_line_shows_open_proto_sessions() -> None:
    from collections import Counter

    from flows.progress import progress_line
    t = Counter({"hits_read": 300, "open": 12, "closed:inactivity": 5, "dead_letters": 1})
    assert progress_line(t, 15.2) == (
        "protosessions: 300 hits read, 12 open proto-sessions, 5 sessions, 1 dead letters, 15s")


def test_help_never_shows_kafka_config_values() -> None:
    secret = "sasl.password=hunter2"
    env = {"PROTOSESSIONS_KAFKA_CONFIG": secret}
    for argv in (["run", "--help"], ["topics", "create", "--help"]):
        out = subprocess.run([sys.executable, "-m", "flows.cli", *argv],
                             env={**os.environ, **env},
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0 and "--kafka-config" in out.stdout
        assert "hunter2" not in out.stdout


def test_bytewax_launcher_prints_the_summary_line(tmp_path) -> None:
    """`python -m bytewax.run flows.sessions:flow` (the pods' command) ends
    with the same summary line as `protosessions run`."""
    import os
    import subprocess
    import sys

    from golden_cases import hits_path

    env = {**os.environ, "PROTOSESSIONS_INPUT": str(hits_path("17_mixed_2000")),
           "PROTOSESSIONS_OUTPUT": str(tmp_path / "s.jsonl"), "PROTOSESSIONS_DEAD_LETTER": "/dev/null",
           "BYTEWAX_DATAFLOW_API_CACHE_PATH": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-m", "bytewax.run", "flows.sessions:flow"], env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("protosessions: 2013 hits read, 385 sessions"), proc.stderr
