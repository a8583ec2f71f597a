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
