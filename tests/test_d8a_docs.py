"""docs/d8a.md's "Try it on a queue d8a wrote", run as written: its commands
are read from the page's fenced block (so this test breaks when the page
changes) and run against the test broker; the job's sessions must be d8a's
26. Only the broker address, the topic names (through the
`PROTOSESSIONS_*_TOPIC` variables) and the queue's copy (in the test's
temporary folder) differ."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import uuid
from pathlib import Path

import orjson
import pytest

from d8a_support import d8a_sessions, grouping
from flows.cli import build_parser
from test_quickstart import protosessions

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "d8a.md"
HEADING = "## Try it on a queue d8a wrote"
PAGE_BROKER = "127.0.0.1:9092"
PAGE_QUEUE = "/tmp/d8a-queue"


def page_commands() -> list[list[str]]:
    """The argv of each command of the section's first ```bash block."""
    text = PAGE.read_text()
    assert HEADING in text, f"docs/d8a.md has no {HEADING!r} section"
    block = re.search(r"```bash\n(.*?)```", text[text.index(HEADING):], re.S)
    assert block, "no ```bash block in the section"
    commands = [shlex.split(line, comments=True) for line in block.group(1).splitlines()]
    return [c for c in commands if c]


def test_the_pages_commands_are_what_this_test_runs() -> None:
    """Without a broker too: the block is the four steps, and every
    `protosessions` command in it parses as the CLI reads it."""
    commands = page_commands()
    assert [c[0] for c in commands] == ["protosessions", "cp", "protosessions", "protosessions"]
    assert [c[1] for c in commands if c[0] == "protosessions"] == ["topics", "d8a-bridge", "run"]
    for argv in commands:
        if argv[0] == "protosessions":
            build_parser().parse_args(argv[1:])
    run = commands[3]
    for flag, value in (("--input-format", "d8a"), ("--identity-rules", "d8a"),
                        ("--session-duration", "2s")):
        assert run[run.index(flag) + 1] == value
    text = PAGE.read_text()
    assert "sessions.timeout" in text and "--poll-interval" in text and "rejected/" in text


@pytest.mark.kafka
def test_the_pages_commands_make_d8as_sessions(tmp_path: Path) -> None:
    from kafka_support import bootstrap, consume_all

    broker = bootstrap()
    queue = str(tmp_path / "d8a-queue")
    tag = f"d8a-doc-{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "PROTOSESSIONS_HITS_TOPIC": f"{tag}.hits",
           "PROTOSESSIONS_SESSIONS_TOPIC": f"{tag}.sessions",
           "PROTOSESSIONS_DEAD_LETTER_TOPIC": f"{tag}.dead"}
    env.pop("PROTOSESSIONS_KAFKA_BROKERS", None)
    outputs = []
    for argv in page_commands():
        argv = [a.replace(PAGE_BROKER, broker).replace(PAGE_QUEUE, queue) for a in argv]
        if argv[0] == "cp":
            assert argv[1:3] == ["-r", "tests/d8a/queue"]
            shutil.copytree(ROOT / argv[2], argv[3])
            continue
        proc = subprocess.run(protosessions() + argv[1:], env=env, cwd=ROOT, capture_output=True,
                              text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr
        outputs.append(proc.stderr)
    bridge_summary = outputs[1].strip().splitlines()[-1]
    assert bridge_summary.startswith("protosessions d8a-bridge: 19 tasks, 534 hits acknowledged "
                                     f"on topic {tag}.hits, 454 pings skipped, 0 files moved")
    assert os.listdir(queue) == []
    sessions = [orjson.loads(m.value())
                for m in consume_all(broker, f"{tag}.sessions", expect=26, timeout=60)]
    assert len(sessions) == 26 and grouping(sessions) == d8a_sessions()
