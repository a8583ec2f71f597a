"""What a Kubernetes operator does every week, held offline (and on the local
broker): a lost peer re-forms the cluster in one line, a peer's new address
restarts the process at once, a graceful stop exits in about a second with
what it produced delivered, the recovery store stays private, a volume the
job cannot write is one line, and the documented way to change a session
rule works (issue 20; the same on a real cluster: tests/test_k8s_e2e.py)."""

from __future__ import annotations

import os
import shutil
import signal
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import yaml

from flows import supervisor
from flows.recovery import RECORD, check_resume

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "k8s"
VENV_BIN = str(Path(sys.executable).parent)


def docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def statefulset() -> dict:
    return docs(K8S / "statefulset.yaml")[0]


def init_script() -> str:
    inits = statefulset()["spec"]["template"]["spec"]["initContainers"]
    return next(c for c in inits if c["name"] == "recovery-init")["command"][2]


# --- the supervisor ------------------------------------------------------------------

def run_supervisor(tmp_path: Path, children: list[str], resolve=None, monkeypatch=None,
                   capfd=None):
    """Run a Supervisor whose successive children are the Python snippets
    `children`; returns (exit code, stderr text, how many were started)."""
    hostfile = tmp_path / "hostfile"
    hostfile.write_text("pod-0.svc:9999\npod-1.svc:9999\n")
    started: list[int] = []

    def spawn(self):
        code = children[min(len(started), len(children) - 1)]
        started.append(1)
        child = subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE)
        relay = supervisor._Relay(child.stderr)
        relay.start()
        return child, relay

    assert monkeypatch is not None and capfd is not None
    capfd.readouterr()
    monkeypatch.setattr(supervisor.Supervisor, "_spawn", spawn)
    monkeypatch.setattr(supervisor, "resolve", resolve or (lambda h: frozenset({"192.0.2.9"})))
    monkeypatch.setattr(supervisor, "GONE_WAIT_S", 0.3)
    try:
        rc = supervisor.Supervisor([], str(hostfile)).run()
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
    return rc, capfd.readouterr().err, len(started)


PANIC = textwrap.dedent('''
    import sys
    print("protosessions: 10 hits read", file=sys.stderr)
    print("Traceback (most recent call last):", file=sys.stderr)
    print('  File "bytewax/run.py", line 355, in <module>', file=sys.stderr)
    print("pyo3_runtime.PanicException: Send thread panic: Any { .. }", file=sys.stderr)
    sys.exit(1)
''')


def test_a_lost_peer_is_one_line_and_the_process_comes_back(tmp_path, monkeypatch, capfd) -> None:
    rc, err, started = run_supervisor(tmp_path, [PANIC, "pass"], monkeypatch=monkeypatch, capfd=capfd)
    assert rc == 0 and started == 2
    assert "Traceback" not in err and "PanicException" not in err
    lines = [ln for ln in err.splitlines() if ln.startswith("protosessions: lost a peer")]
    assert len(lines) == 1 and "re-forming the cluster from the last snapshot" in lines[0]
    assert "10 hits read" in err  # the child's own lines still pass


def test_the_lost_peer_is_named_when_its_address_went(tmp_path, monkeypatch, capfd) -> None:
    calls = {"n": 0}

    def resolve(host):
        calls["n"] += 1
        gone = calls["n"] > 2 and host.startswith("pod-1")  # after the first look-up of both
        return None if gone and calls["n"] < 8 else frozenset({"192.0.2.9"})
    rc, err, started = run_supervisor(tmp_path, [PANIC, "pass"], resolve, monkeypatch, capfd)
    assert rc == 0 and started == 2
    assert "lost a peer (pod-1 is gone (was 192.0.2.9))" in err, err


def test_a_peer_with_a_new_address_restarts_the_process_at_once(tmp_path, monkeypatch, capfd) -> None:
    t0 = time.monotonic()

    def resolve(host):  # pod-0 comes back 1.5 s in with another address
        late = time.monotonic() - t0 > 1.5
        return frozenset({"192.0.2.7" if late and host.startswith("pod-0") else "192.0.2.9"})
    waits = "import time; time.sleep(60)"  # a child stuck connecting to the old address
    rc, err, started = run_supervisor(tmp_path, [waits, "pass"], resolve, monkeypatch, capfd)
    assert rc == 0 and started == 2
    assert time.monotonic() - t0 < 10
    assert "peer pod-0 moved to 192.0.2.7 (was 192.0.2.9): re-forming" in err


def test_any_other_failure_is_shown_as_it_was_and_ends_the_pod(tmp_path, monkeypatch, capfd) -> None:
    refusal = "import sys; print('flows.sessions:flow: recovery store x was written with ...', " \
              "file=sys.stderr); sys.exit(2)"
    rc, err, started = run_supervisor(tmp_path, [refusal], monkeypatch=monkeypatch, capfd=capfd)
    assert (rc, started) == (2, 1)
    assert err.strip() == "flows.sessions:flow: recovery store x was written with ..."
    bug = "raise ZeroDivisionError('a bug')"
    rc, err, started = run_supervisor(tmp_path, [bug], monkeypatch=monkeypatch, capfd=capfd)
    assert (rc, started) == (1, 1)
    assert "Traceback" in err and "ZeroDivisionError: a bug" in err


def test_sigterm_reaches_the_child_and_the_pod_exits_with_its_code(tmp_path, monkeypatch, capfd) -> None:
    child = textwrap.dedent('''
        import signal, sys, time
        signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
        time.sleep(60)
    ''')
    pid = os.getpid()
    timer = __import__("threading").Timer(1.0, os.kill, (pid, signal.SIGTERM))
    timer.start()
    t0 = time.monotonic()
    rc, err, started = run_supervisor(tmp_path, [child], monkeypatch=monkeypatch, capfd=capfd)
    assert (rc, started) == (0, 1)
    assert time.monotonic() - t0 < 10


def test_the_pods_command_is_supervised_in_a_cluster_only(tmp_path) -> None:
    hostfile = tmp_path / "hostfile"
    hostfile.write_text("no-such-host.invalid:9999\n")
    env = {**os.environ, "BYTEWAX_HOSTFILE_PATH": str(hostfile)}
    p = subprocess.Popen([sys.executable, "-m", "flows.launch"], env=env, cwd=ROOT,
                         stderr=subprocess.PIPE, text=True)
    time.sleep(3)
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=20)
    assert p.returncode == 0
    assert err.strip() == "protosessions: waiting for no-such-host to have an address"


# --- the recovery store --------------------------------------------------------------

def test_the_resume_record_is_private_whatever_the_umask(tmp_path) -> None:
    old = os.umask(0o022)
    try:
        check_resume(str(tmp_path), {"shards": 64, "state_format": 7})
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / RECORD).stat().st_mode) == 0o600


@pytest.fixture
def open_tmp():
    """A temporary directory uid 10001 can reach (pytest's are private to root)."""
    import tempfile
    d = Path(tempfile.mkdtemp(prefix="psk8s-ops-"))
    d.chmod(0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def run_init(directory: Path, ordinal: int = 0, as_user: bool = False) -> subprocess.CompletedProcess:
    env = {"PATH": f"{VENV_BIN}:/usr/bin:/bin", "BYTEWAX_RECOVERY_DIRECTORY": str(directory),
           "POD_NAME": f"protosessions-{ordinal}", "RECOVERY_PARTITIONS": "2"}
    cmd = ["sh", "-c", init_script()]
    if as_user and os.geteuid() == 0:  # as the pods run it: uid/gid 10001 (not root, who may write anywhere)
        cmd = ["setpriv", "--reuid", "10001", "--regid", "10001", "--clear-groups", *cmd]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)


def test_a_recovery_volume_the_job_cannot_write_is_one_line_saying_what_to_set(open_tmp) -> None:
    tmp_path = open_tmp
    vol = tmp_path / "vol"
    vol.mkdir()
    vol.chmod(0o755)  # root's (as a hostPath or NFS export is): not uid 10001's to write
    if os.geteuid() != 0:
        vol.chmod(0o555)
    r = run_init(vol, as_user=True)
    assert r.returncode == 1
    lines = r.stdout.splitlines() + r.stderr.splitlines()
    assert len(lines) == 1, lines
    assert "is not writable by uid" in lines[0] and "10001" in lines[0]
    assert not list(vol.iterdir())


def owned_volume(tmp_path: Path) -> Path:
    vol = tmp_path / "vol"
    vol.mkdir()
    return vol


def test_changing_a_session_rule_by_the_documented_procedure(open_tmp) -> None:
    """k8s/README.md "Changing a session rule": scale to 0, delete the part-*
    files, apply; pod 0's recovery-init then starts the store afresh (the
    resume record that would refuse the new rule goes with the partitions)."""
    tmp_path = open_tmp
    vol = owned_volume(tmp_path)
    r = run_init(vol)
    assert r.returncode == 0, r.stderr
    hits = tmp_path / "hits.jsonl"
    from protosessions.generate import generate_hits
    hits.write_bytes(b"\n".join(generate_hits(300, 40, seed=3)) + b"\n")
    out = tmp_path / "sessions.jsonl"
    cli = [sys.executable, "-m", "flows.cli", "run", "--input", str(hits), "--output", str(out),
           "--recovery-dir", str(vol)]

    def run(*extra: str) -> subprocess.CompletedProcess:
        return subprocess.run([*cli, *extra], cwd=ROOT, capture_output=True, text=True,
                              timeout=300, env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
    assert run().returncode == 0
    assert stat.S_IMODE((vol / RECORD).stat().st_mode) == 0o600
    refused = run("--session-duration", "10m")
    assert refused.returncode == 2 and "--session-duration" in refused.stderr
    # The procedure: (scale to 0) delete the partitions, (apply) pod 0's init.
    for p in vol.glob("part-*.sqlite3"):
        p.unlink()
    r = run_init(vol)
    assert r.returncode == 0, r.stderr
    assert not (vol / RECORD).exists()
    changed = run("--session-duration", "10m")
    assert changed.returncode == 0, changed.stderr


def test_other_pods_wait_for_pod_0_and_never_clear_the_record(open_tmp) -> None:
    vol = owned_volume(open_tmp)
    assert run_init(vol).returncode == 0
    (vol / RECORD).write_text("{}")
    r = run_init(vol, ordinal=1)
    assert r.returncode == 0 and (vol / RECORD).exists()


# --- manifests -------------------------------------------------------------------------

def test_every_pod_template_turns_service_links_off() -> None:
    """Kubernetes' service links would put PROTOSESSIONS_METRICS_* variables
    into every pod, each warned about as not a protosessions setting."""
    for path in K8S.glob("*.yaml"):
        for d in docs(path):
            spec = d.get("spec", {})
            tmpl = spec.get("template", {}).get("spec")
            if tmpl is not None:
                assert tmpl.get("enableServiceLinks") is False, path.name


def test_the_topics_job_goes_away_before_the_next_apply_needs_its_name() -> None:
    job = docs(K8S / "job-topics.yaml")[0]
    ttl = job["spec"]["ttlSecondsAfterFinished"]
    assert 0 < ttl <= 300


def test_the_grace_period_outlasts_the_stop() -> None:
    from flows import stop
    grace = statefulset()["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert stop.QUIET_S < stop.HARD_STOP_AFTER_S < grace


def test_service_link_variables_are_not_warned_about_but_typos_are() -> None:
    """A one-off `kubectl run` of the image gets service links whatever the
    manifests say: the 8 variables of the protosessions-metrics Service."""
    from flows.options import unknown_env

    ip, port = "198.19.0.7", "3030"
    links = {"PROTOSESSIONS_METRICS_SERVICE_HOST": ip, "PROTOSESSIONS_METRICS_SERVICE_PORT": port,
             "PROTOSESSIONS_METRICS_SERVICE_PORT_API": port,
             "PROTOSESSIONS_METRICS_PORT": f"tcp://{ip}:{port}",
             "PROTOSESSIONS_METRICS_PORT_3030_TCP": f"tcp://{ip}:{port}",
             "PROTOSESSIONS_METRICS_PORT_3030_TCP_PROTO": "tcp",
             "PROTOSESSIONS_METRICS_PORT_3030_TCP_PORT": port,
             "PROTOSESSIONS_METRICS_PORT_3030_TCP_ADDR": ip}
    typos = {"PROTOSESSIONS_KAFKA_PORT": "9092", "PROTOSESSIONS_SESION_DURATION": "5m",
             "PROTOSESSIONS_X_SERVICE_HOST": "kafka"}
    assert unknown_env({**links, **typos}) == sorted(typos)
