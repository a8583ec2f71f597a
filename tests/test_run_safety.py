"""Issue 10: a failed run destroys nothing, and settings that would silently
weaken or change the run are refused (exit codes and files, never wording)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from protosessions import cli

ROOT = Path(__file__).resolve().parent.parent
HIT = ('{"id":"%s","client_id":"c1","property_id":"G-1",'
       '"server_received_time":"2025-01-01T12:00:%02dZ"}')
PRECIOUS = b'{"precious": true}\n' * 1000


def hits(n: int = 5) -> bytes:
    return "\n".join(HIT % (f"h{i}", i) for i in range(n)).encode() + b"\n"


def run_cli(*args: str, env: dict | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "protosessions.cli", *args], capture_output=True,
                          text=True, timeout=120, cwd=cwd or ROOT,
                          env={**os.environ, **(env or {})})


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    src = tmp_path / "small.jsonl"
    src.write_bytes(hits())
    precious = tmp_path / "precious.jsonl"
    precious.write_bytes(PRECIOUS)
    return {"input": src, "output": precious, "dir": tmp_path}


# --- B. A failed run destroys data ------------------------------------------

def test_a_bad_dead_letter_path_leaves_the_output_as_it_was(files) -> None:
    proc = run_cli("run", "--input", str(files["input"]), "--output", str(files["output"]),
                   "--dead-letter", str(files["dir"] / "nodir" / "d.jsonl"))
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1
    assert files["output"].read_bytes() == PRECIOUS


def test_a_dataflow_that_fails_leaves_the_output_as_it_was(files, monkeypatch, capsys) -> None:
    import flows.steps

    real = flows.steps.parse_hit

    def failing(raw: bytes, *args):
        if b'"h3"' in raw:
            raise RuntimeError("injected failure")
        return real(raw, *args)
    monkeypatch.setattr(flows.steps, "parse_hit", failing)
    dead = files["dir"] / "dead.jsonl"
    dead.write_bytes(b"old dead letters\n")
    code = cli.main(["run", "--input", str(files["input"]), "--output", str(files["output"]),
                     "--dead-letter", str(dead)])
    assert code == 1
    assert files["output"].read_bytes() == PRECIOUS
    assert dead.read_bytes() == b"old dead letters\n"
    assert sorted(p.name for p in files["dir"].iterdir()) == ["dead.jsonl", "precious.jsonl",
                                                               "small.jsonl"]


def test_a_run_that_succeeds_replaces_the_output(files) -> None:
    os.chmod(files["output"], 0o640)
    proc = run_cli("run", "--input", str(files["input"]), "--output", str(files["output"]))
    assert proc.returncode == 0, proc.stderr
    sessions = [orjson.loads(x) for x in files["output"].read_bytes().splitlines()]
    assert [s["hit_count"] for s in sessions] == [5]
    assert files["output"].stat().st_mode & 0o777 == 0o640  # the file's mode is kept
    assert sorted(p.name for p in files["dir"].iterdir()) == ["precious.jsonl", "small.jsonl"]


def test_output_to_a_device_is_written_through(files) -> None:
    proc = run_cli("run", "--input", str(files["input"]), "--output", os.devnull,
                   "--dead-letter", os.devnull)
    assert proc.returncode == 0, proc.stderr
    assert os.path.exists(os.devnull) and not os.path.isfile(os.devnull)


def test_output_that_is_a_directory_is_refused_before_anything_is_opened(files) -> None:
    dead = files["dir"] / "dead.jsonl"
    dead.write_bytes(b"keep\n")
    proc = run_cli("run", "--input", str(files["input"]), "--output", str(files["dir"]),
                   "--dead-letter", str(dead))
    assert proc.returncode == 2
    assert dead.read_bytes() == b"keep\n"
