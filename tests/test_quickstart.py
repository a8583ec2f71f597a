"""README's "Quick start on Kafka", run as written: its commands are read from
the README's fenced block (so this test breaks when the README changes), run
against the test broker, and at least one session must arrive on the
sessions topic. Only the broker address, the topic names (through the
`PROTOSESSIONS_*_TOPIC` variables) and the generator's `--duration` differ.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import time
import uuid
from pathlib import Path

import orjson
import pytest

from kafka_support import bootstrap, consume_all

pytestmark = pytest.mark.kafka

README = Path(__file__).resolve().parents[1] / "README.md"
HEADING = "## Quick start on Kafka"
README_BROKER = "127.0.0.1:9092"
SKIPPED = ("bash scripts/kafka.sh start", ". .venv/bin/activate")  # the test has its broker and venv


def quickstart_commands() -> list[list[str]]:
    """The argv of each command of the quick start's first ```bash block
    (a trailing `&` kept as the last word)."""
    text = README.read_text()
    assert HEADING in text, f"README.md has no {HEADING!r} section"
    section = text[text.index(HEADING):]
    block = re.search(r"```bash\n(.*?)```", section, re.S)
    assert block, "no ```bash block in the quick start"
    commands = []
    for line in block.group(1).splitlines():
        argv = shlex.split(line, comments=True)
        if not argv or any(" ".join(argv).startswith(s) for s in SKIPPED):
            continue
        assert argv[0] == "protosessions", f"the quick start runs {line!r}: teach this test"
        commands.append(argv)
    return commands


def protosessions() -> list[str]:
    """The installed console script (as a user runs it), else the module."""
    script = Path(sys.executable).with_name("protosessions")
    return [str(script)] if script.exists() else [sys.executable, "-m", "flows.cli"]


def localise(argv: list[str], broker: str, duration: str) -> list[str]:
    out = [a.replace(README_BROKER, broker) for a in argv]
    if "--duration" in out:
        out[out.index("--duration") + 1] = duration
    return protosessions() + out[1:]


def test_quickstart_shows_sessions_within_a_minute(tmp_path: Path) -> None:
    broker = bootstrap()
    commands = quickstart_commands()
    assert [c[1] for c in commands] == ["topics", "generate", "run"]
    assert commands[1][-1] == "&", "the generator runs in the background"
    tag = f"qs-{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "PROTOSESSIONS_HITS_TOPIC": f"{tag}.hits",
           "PROTOSESSIONS_SESSIONS_TOPIC": f"{tag}.sessions",
           "PROTOSESSIONS_DEAD_LETTER_TOPIC": f"{tag}.dead"}
    env.pop("PROTOSESSIONS_KAFKA_BROKERS", None)

    topics = subprocess.run(localise(commands[0], broker, ""), env=env, capture_output=True,
                            text=True, timeout=60)
    assert topics.returncode == 0, topics.stderr
    gen_err, run_err = tmp_path / "generate.err", tmp_path / "run.err"
    with open(gen_err, "w") as ge, open(run_err, "w") as re_:
        gen = subprocess.Popen(localise(commands[1][:-1], broker, "40s"), env=env, stderr=ge)
        job = subprocess.Popen(localise(commands[2], broker, ""), env=env, stderr=re_)
        try:
            started = time.monotonic()
            sessions = []
            while not sessions and time.monotonic() - started < 60:
                assert job.poll() is None, run_err.read_text()
                sessions = consume_all(broker, f"{tag}.sessions", expect=1, timeout=5)
            waited = time.monotonic() - started
        finally:
            job.kill()
            job.wait(30)
        assert gen.wait(90) == 0, gen_err.read_text()

    assert sessions, f"no session within a minute; run said:\n{run_err.read_text()}"
    first = orjson.loads(sessions[0].value())
    assert first["close_reason"] == "inactivity" and first["hit_count"] >= 1
    assert sessions[0].key() == first["authoritative_client_id"].encode()
    print(f"first session after {waited:.0f}s")
    assert re.search(r"protosessions generate: [1-9]\d* hits to topic " + re.escape(f"{tag}.hits"),
                     gen_err.read_text())
    assert "open proto-sessions" in run_err.read_text()
