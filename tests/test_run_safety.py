"""Issue 10: a failed run destroys nothing, and settings that would silently
weaken or change the run are refused (exit codes and files, never wording)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from flows import cli

ROOT = Path(__file__).resolve().parent.parent
HIT = ('{"id":"%s","client_id":"c1","property_id":"G-1",'
       '"server_received_time":"2025-01-01T12:00:%02dZ"}')
PRECIOUS = b'{"precious": true}\n' * 1000


def hits(n: int = 5) -> bytes:
    return "\n".join(HIT % (f"h{i}", i) for i in range(n)).encode() + b"\n"


def run_cli(*args: str, env: dict | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """The CLI with this test's `PROTOSESSIONS_*` variables only (none inherited)."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("PROTOSESSIONS_")}
    return subprocess.run([sys.executable, "-m", "flows.cli", *args], capture_output=True,
                          text=True, timeout=120, cwd=cwd or ROOT, env={**base, **(env or {})})


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
    import protosessions.merge

    real = protosessions.merge.parse_hit

    def failing(raw: bytes, *args):
        if b'"h3"' in raw:
            raise RuntimeError("injected failure")
        return real(raw, *args)
    monkeypatch.setattr(protosessions.merge, "parse_hit", failing)
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


# --- C. Settings that silently weaken or change things ----------------------

def refused(proc: subprocess.CompletedProcess) -> bool:
    """Exit 2 with one line and no traceback."""
    return (proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
            and "Traceback" not in proc.stderr)


@pytest.mark.parametrize("pair", [
    "acks=0", "acks=1", "acks= 1 ", "ACKS=0", "acks=2", "acks=+1", "acks=1.5",
    "request.required.acks=0", "request.required.acks=1", "topic.acks=0",
    "topic.request.required.acks=0", "enable.idempotence=0", "enable.idempotence=false",
    "enable.idempotence=FALSE", "enable.idempotence= f", "enable.idempotence=no",
    "enable.idempotence=off", "enable.idempotence=",
])
def test_kafka_settings_that_weaken_delivery_are_refused(files, pair: str) -> None:
    proc = run_cli("run", "--input", str(files["input"]), "--output", str(files["output"]),
                   "--kafka-config", pair)
    assert refused(proc)
    assert files["output"].read_bytes() == PRECIOUS


@pytest.mark.parametrize("pair", ["acks=all", "acks=ALL", "acks=-1", "request.required.acks= all ",
                                  "enable.idempotence=true", "enable.idempotence=TRUE",
                                  "enable.idempotence=1", "enable.idempotence=t",
                                  "sasl.password=hunter2", "fetch.min.bytes=1"])
def test_kafka_settings_that_keep_delivery_are_accepted(files, pair: str) -> None:
    proc = run_cli("run", "--input", str(files["input"]), "--output", str(files["output"]),
                   "--kafka-config", pair)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("pair", ["no.such.property=1", "Acks=all", "bootstrap.server=x:9092",
                                  "linger.ms=soon", "error_cb=x", "logger=x"])
def test_unknown_kafka_settings_are_refused_in_file_mode(files, pair: str) -> None:
    proc = run_cli("run", "--input", str(files["input"]), "--output", str(files["output"]),
                   "--kafka-config", pair)
    assert refused(proc)


@pytest.mark.parametrize("args,env", [
    (["--kafka-config", "sasl.password hunter2"], {}),
    (["--kafka-config", "sasl.password=hunter2", "--kafka-config", "hunter2x"], {}),
    ([], {"PROTOSESSIONS_KAFKA_CONFIG": "security.protocol=SASL_SSL,sasl.password=hunter2,x"}),
    ([], {"PROTOSESSIONS_KAFKA_CONFIG": "sasl.password=hun,ter2"}),
    ([], {"PROTOSESSIONS_KAFKA_CONFIG": "sasl.password=hunter2,ter2=x"}),
    (["--kafka-config", "ssl.key.password=hunter2", "--kafka-config", "acks=0"], {}),
    (["--kafka-config", "sasl.oauthbearer.client.secret=hunter2", "--kafka-config", "linger.ms=x"], {}),
])
def test_secrets_are_never_printed(files, args: list[str], env: dict) -> None:
    proc = run_cli("run", "--input", str(files["input"]), "--output", str(files["output"]), *args,
                   env=env)
    assert refused(proc)
    for secret in ("hunter2", "hun", "ter2"):
        assert secret not in proc.stderr


def test_topics_create_never_prints_a_secret() -> None:
    proc = run_cli("topics", "create", "--kafka-brokers", "127.0.0.1:1",
                   env={"PROTOSESSIONS_KAFKA_CONFIG": "sasl.password=hun,ter2"})
    assert refused(proc)
    assert "hun" not in proc.stderr and "ter2" not in proc.stderr


def test_the_secret_example_is_one_pair_per_line() -> None:
    import yaml

    text = (ROOT / "k8s" / "secret-example.yaml").read_text()
    value = yaml.safe_load(text)["stringData"]["kafka-config"]
    from flows.options import kafka_config, split_list
    pairs = split_list(value)
    assert len(value.strip().splitlines()) == len(pairs) > 1
    assert kafka_config(pairs)["sasl.password"]


def test_unknown_protosessions_variables_are_named_and_the_sample_is_announced(files) -> None:
    proc = run_cli("run", "--output", str(files["output"]),
                   env={"PROTOSESSIONS_INPU": str(files["input"])})
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert any("PROTOSESSIONS_INPU" in line for line in lines)
    assert any("sample" in line for line in lines[:-1])
    known = run_cli("run", "--output", str(files["output"]),
                    env={"PROTOSESSIONS_INPUT": str(files["input"])})
    assert known.returncode == 0 and len(known.stderr.strip().splitlines()) == 1, known.stderr


@pytest.mark.parametrize("content", [b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03" + bytes(range(256)),
                                     b"id,client_id\n1,2\n3,4\n", None])
def test_input_without_one_valid_hit_exits_1(files, content: bytes | None) -> None:
    src = files["input"]
    if content is None:
        src = Path("/bin/ls") if Path("/bin/ls").exists() else Path(sys.executable)
    else:
        src.write_bytes(content)
    proc = run_cli("run", "--input", str(src), "--output", str(files["output"]),
                   "--dead-letter", os.devnull)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr


def test_an_empty_input_is_not_an_error(files) -> None:
    files["input"].write_bytes(b"\n\n")
    proc = run_cli("run", "--input", str(files["input"]), "--output", str(files["output"]))
    assert proc.returncode == 0, proc.stderr
    assert files["output"].read_bytes() == b""


# --- recovery: what a resume must not change --------------------------------

@pytest.fixture
def store(files) -> Path:
    d = files["dir"] / "store"
    assert run_cli("recovery", "init", str(d), "--partitions", "2").returncode == 0
    return d


def run_with_store(files, store: Path, *extra: str, cwd: Path | None = None,
                   src: str | None = None) -> subprocess.CompletedProcess:
    return run_cli("run", "--input", src or str(files["input"]), "--output", str(files["output"]),
                   "--dead-letter", str(files["dir"] / "dead.jsonl"), "--recovery-dir", str(store),
                   *extra, cwd=cwd)


@pytest.mark.parametrize("first,second", [
    (["--shards", "64"], ["--shards", "32"]),
    ([], ["--identity-shards", "4"]),
    ([], ["--session-duration", "5m"]),
    ([], ["--join-by-user-id", "--no-join-by-session-stamp"]),
])
def test_a_resume_with_other_settings_is_refused(files, store, first, second) -> None:
    assert run_with_store(files, store, *first).returncode == 0
    before = files["output"].read_bytes()
    assert refused(run_with_store(files, store, *second))
    assert files["output"].read_bytes() == before
    assert run_with_store(files, store, *first).returncode == 0  # the recorded ones still work


def test_a_resume_on_another_input_or_output_is_refused(files, store) -> None:
    assert run_with_store(files, store).returncode == 0
    other = files["dir"] / "other.jsonl"
    other.write_bytes(hits(3))
    assert refused(run_with_store(files, store, src=str(other)))
    assert refused(run_cli("run", "--input", str(files["input"]), "--output", str(other),
                           "--dead-letter", str(files["dir"] / "dead.jsonl"),
                           "--recovery-dir", str(store)))
    assert other.read_bytes() == hits(3)


def test_a_resume_with_a_relative_input_path_is_the_same_input(files, store) -> None:
    first = run_with_store(files, store, cwd=files["dir"], src=files["input"].name)
    assert first.returncode == 0, first.stderr
    again = run_with_store(files, store, src=str(files["input"]))
    assert again.returncode == 0, again.stderr


def _corrupt_snapshots(store: Path) -> None:
    import sqlite3

    for part in store.glob("part-*.sqlite3"):
        with sqlite3.connect(part) as db:
            db.execute("UPDATE snaps SET ser_change = x'789c0000deadbeef' WHERE ser_change IS NOT NULL")


def test_a_corrupted_snapshot_is_one_line_naming_the_file(files, store) -> None:
    assert run_with_store(files, store).returncode == 0
    _corrupt_snapshots(store)
    proc = run_with_store(files, store)
    assert refused(proc)
    assert "part-" in proc.stderr


def test_a_damaged_session_blob_is_found_and_named(tmp_path) -> None:
    """A snapshot that unpickles but holds a broken compressed chunk (a bare
    `zstd.ZstdError` at resume) is found by the post-mortem check."""
    import pickle
    import sqlite3

    from bytewax.recovery import init_db_dir

    from flows.recovery import damaged_snapshot
    from protosessions.clock import Clock
    from protosessions.config import Settings
    from protosessions.engine import SessionShard
    from protosessions.hit import parse_hit

    settings = Settings.from_strings(compaction_threshold="1B")
    shard = SessionShard(settings, Clock())
    shard.on_hits([parse_hit(line, settings, None) for line in hits(5).splitlines()])
    from protosessions.merge import Watermark

    snap = (shard.snapshot(), (Watermark().snapshot(), (), 0))  # as the session step keeps it
    blob = pickle.dumps(snap)
    chunk = next(b for b in _bytes_in(snap) if b[:4] == b"\x28\xb5\x2f\xfd")  # a zstd frame
    broken = blob.replace(chunk, chunk[:6] + bytes(len(chunk) - 6))
    init_db_dir(tmp_path, 2)
    with sqlite3.connect(tmp_path / "part-1.sqlite3") as db:
        db.execute("INSERT INTO snaps (step_id, state_key, snap_epoch, ser_change) VALUES (?,?,?,?)",
                   ("protosessions.sessions", "s1", 1, broken))
    found = damaged_snapshot(str(tmp_path))
    assert found is not None and "part-1.sqlite3" in found and "\n" not in found
    with sqlite3.connect(tmp_path / "part-1.sqlite3") as db:
        db.execute("UPDATE snaps SET ser_change = ?", (blob,))
    assert damaged_snapshot(str(tmp_path)) is None


def _bytes_in(value) -> list[bytes]:
    if isinstance(value, bytes):
        return [value]
    if isinstance(value, (tuple, list)):
        return [b for v in value for b in _bytes_in(v)]
    return []


def test_an_unwritable_recovery_directory_is_one_line(tmp_path_factory) -> None:
    """As root (who writes anywhere) the run is made as `nobody`."""
    import tempfile

    base = Path(tempfile.mkdtemp(prefix="unwritable-"))
    try:
        os.chmod(base, 0o755)
        src = base / "hits.jsonl"
        src.write_bytes(hits())
        os.chmod(src, 0o644)
        store = base / "store"
        assert run_cli("recovery", "init", str(store), "--partitions", "1").returncode == 0
        os.chmod(store, 0o555)
        for part in store.iterdir():
            os.chmod(part, 0o444)
        cmd = [sys.executable, "-m", "flows.cli", "run", "--input", str(src),
               "--output", "-", "--recovery-dir", str(store)]
        if os.geteuid() == 0:
            cmd = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *cmd]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd="/",
                              env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
        assert refused(proc), proc.stderr
        assert str(store) in proc.stderr
    finally:
        os.chmod(base / "store", 0o755)
        import shutil
        shutil.rmtree(base)


def test_the_bytewax_run_entry_point_refuses_a_changed_resume_too(tmp_path, monkeypatch) -> None:
    """`python -m bytewax.run flows.sessions:flow` (the pods) reads its
    settings from the environment and the store from BYTEWAX_RECOVERY_DIRECTORY."""
    import flows.sessions
    from bytewax.recovery import init_db_dir

    init_db_dir(tmp_path, 1)
    monkeypatch.setenv("BYTEWAX_RECOVERY_DIRECTORY", str(tmp_path))
    monkeypatch.setenv("PROTOSESSIONS_SHARDS", "64")
    assert flows.sessions.flow is not None
    assert flows.sessions.flow is not None  # the same settings: resumes
    monkeypatch.setenv("PROTOSESSIONS_SHARDS", "32")
    with pytest.raises(SystemExit) as refused_:  # one line on stderr, exit 2
        flows.sessions.flow
    assert refused_.value.code == 2


def test_output_and_dead_letters_in_one_file_are_refused(files) -> None:
    proc = run_cli("run", "--input", str(files["input"]), "--output", str(files["output"]),
                   "--dead-letter", str(files["output"]))
    assert refused(proc)
    assert files["output"].read_bytes() == PRECIOUS


def test_a_store_of_another_state_format_is_refused(files, store) -> None:
    """A store written by an earlier build (its record has no `state_format`,
    or another one) is refused in one line, its files untouched."""
    import json

    assert run_with_store(files, store).returncode == 0
    path = store / "protosessions-resume.json"
    record = json.loads(path.read_text())
    before = files["output"].read_bytes()
    for written in (None, 6):
        if written is None:
            record.pop("state_format")
        else:
            record["state_format"] = written
        path.write_text(json.dumps(record))
        assert refused(run_with_store(files, store))
        assert files["output"].read_bytes() == before
