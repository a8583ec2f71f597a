"""`python -m flows.launch`: Bytewax's launcher with the intervals spelled as
every other setting (`PROTOSESSIONS_SNAPSHOT_INTERVAL=10s`)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from flows.launch import bytewax_env
from golden_cases import hits_path


def test_intervals_are_handed_to_bytewax_in_whole_seconds() -> None:
    assert bytewax_env({"PROTOSESSIONS_SNAPSHOT_INTERVAL": "2m"}) == {
        "BYTEWAX_SNAPSHOT_INTERVAL": "120", "BYTEWAX_RECOVERY_BACKUP_INTERVAL": "0"}
    assert bytewax_env({}) == {"BYTEWAX_SNAPSHOT_INTERVAL": "10",  # protosessions' defaults
                               "BYTEWAX_RECOVERY_BACKUP_INTERVAL": "0"}
    assert bytewax_env({"BYTEWAX_SNAPSHOT_INTERVAL": "5"}) == {  # Bytewax's spelling alone: kept
        "BYTEWAX_RECOVERY_BACKUP_INTERVAL": "0"}


@pytest.mark.parametrize("environ", [
    {"PROTOSESSIONS_SNAPSHOT_INTERVAL": "1500ms"},  # Bytewax takes whole seconds
    {"PROTOSESSIONS_SNAPSHOT_INTERVAL": "10s", "BYTEWAX_SNAPSHOT_INTERVAL": "5"},  # two spellings
    {"PROTOSESSIONS_BACKUP_INTERVAL": "soon"},
])
def test_what_cannot_be_handed_over_is_refused(environ: dict) -> None:
    with pytest.raises(ValueError):
        bytewax_env(environ)


def test_the_launcher_runs_the_flow_and_refuses_in_one_line(tmp_path) -> None:
    env = {**os.environ, "PROTOSESSIONS_INPUT": str(hits_path("17_mixed_2000")),
           "PROTOSESSIONS_OUTPUT": str(tmp_path / "s.jsonl"), "PROTOSESSIONS_DEAD_LETTER": "/dev/null",
           "BYTEWAX_DATAFLOW_API_CACHE_PATH": str(tmp_path)}
    ok = subprocess.run([sys.executable, "-m", "flows.launch"], env=env, capture_output=True,
                        text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr
    assert ok.stderr.strip().splitlines()[-1].startswith("protosessions: 2013 hits read")
    bad = subprocess.run([sys.executable, "-m", "flows.launch"], capture_output=True, text=True,
                         env={**env, "PROTOSESSIONS_SNAPSHOT_INTERVAL": "0.5s"}, timeout=60)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1


def test_a_store_given_by_flag_gets_snapshots_and_the_resume_check(tmp_path) -> None:
    """`-r DIR` on the launcher's command line (not the variable) is a
    recovery store too: the steps build real snapshots (a run without a
    store builds none), and a resume with other settings is refused in one
    line."""
    import pickle
    import sqlite3

    store = tmp_path / "store"
    store.mkdir()
    subprocess.run([sys.executable, "-m", "bytewax.recovery", str(store), "1"], check=True,
                   capture_output=True, timeout=60)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BYTEWAX_", "PROTOSESSIONS_"))}
    env.update(PROTOSESSIONS_INPUT=str(hits_path("17_mixed_2000")),
               PROTOSESSIONS_OUTPUT=str(tmp_path / "s.jsonl"), PROTOSESSIONS_DEAD_LETTER="/dev/null",
               BYTEWAX_DATAFLOW_API_CACHE_PATH=str(tmp_path))
    cmd = [sys.executable, "-m", "bytewax.run", "flows.sessions:flow", "-r", str(store),
           "-s", "1", "-b", "0"]
    ok = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr
    assert (store / "protosessions-resume.json").is_file()
    with sqlite3.connect(store / "part-0.sqlite3") as db:
        rows = db.execute("SELECT ser_change FROM snaps WHERE step_id LIKE '%sessions'").fetchall()
    assert rows and all(blob is not None and pickle.loads(blob) is not None for (blob,) in rows)
    bad = subprocess.run(cmd, env={**env, "PROTOSESSIONS_SHARDS": "8"}, capture_output=True,
                         text=True, timeout=60)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1
