"""The StatefulSet's exact command and environment, run as two local processes
over loopback (hostfile with two addresses, process ids 0 and 1 from the pod
names, recovery on), on the real broker: same sessions as one process; then
both killed mid-run and resumed, and still the same sessions, also with a
memory budget far below the open hits."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import orjson
import pytest
import yaml

from kafka_support import bootstrap, consume_all, produce, topics
from recovery_support import last_epoch, read_back
from protosessions.generate import generate_hits

pytestmark = pytest.mark.kafka
K8S = Path(__file__).resolve().parent.parent / "k8s"


def manifest(kind: str) -> dict:
    for path in K8S.glob("*.yaml"):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("kind") == kind:
                return doc
    raise LookupError(kind)


def pod_env(pod: str, configmap: dict, container: dict) -> dict[str, str]:
    """The container's environment as Kubernetes would give it to pod `pod`."""
    env = {k: str(v) for k, v in configmap["data"].items()}
    for e in container.get("env", []):
        if "value" in e:
            env[e["name"]] = str(e["value"])
            continue
        src = e["valueFrom"]
        if "fieldRef" in src and src["fieldRef"]["fieldPath"] == "metadata.name":
            env[e["name"]] = pod
        elif "configMapKeyRef" in src:
            env[e["name"]] = str(configmap["data"][src["configMapKeyRef"]["key"]])
        elif "secretKeyRef" in src and src["secretKeyRef"].get("optional"):
            continue  # the optional Kafka credentials Secret: none on loopback
        else:
            raise AssertionError(f"unhandled env source {e}")
    return env


def cluster_cmd_env(n: int, workdir: Path, brokers: str, t: dict) -> list[tuple[list, dict]]:
    sts, cm = manifest("StatefulSet"), manifest("ConfigMap")
    container = sts["spec"]["template"]["spec"]["containers"][0]
    name = sts["metadata"]["name"]
    base_port = 20000 + os.getpid() % 5000
    hostfile = workdir / f"hostfile-{n}"
    hostfile.write_text("".join(f"127.0.0.1:{base_port + i}\n" for i in range(n)))
    out = []
    for i in range(n):
        env = pod_env(f"{name}-{i}", cm, container)
        assert env["BYTEWAX_POD_NAME"] == f"{name}-{i}"
        env.update({  # only what loopback needs instead of the cluster's volumes and DNS
            "BYTEWAX_HOSTFILE_PATH": str(hostfile),
            "BYTEWAX_RECOVERY_DIRECTORY": str(workdir / "recovery"),
            "BYTEWAX_DATAFLOW_API_PORT": str(base_port + 100 + i),
            "BYTEWAX_DATAFLOW_API_CACHE_PATH": str(workdir),
            "PROTOSESSIONS_SNAPSHOT_INTERVAL": "1s",
            "PROTOSESSIONS_KAFKA_BROKERS": brokers,
            "PROTOSESSIONS_HITS_TOPIC": t["hits"],
            "PROTOSESSIONS_SESSIONS_TOPIC": t["sessions"],
            "PROTOSESSIONS_DEAD_LETTER_TOPIC": t["dead"],
            "PROTOSESSIONS_UNTIL_END": "true",  # a finite run, to compare results
        })
        cmd = list(container["command"]) + list(container.get("args", []))
        assert cmd[0] == "python"
        cmd[0] = sys.executable
        out.append((cmd, {**os.environ, **env}))
    return out


def init_recovery(workdir: Path) -> None:
    rec = workdir / "recovery"
    parts = manifest("ConfigMap")["data"]["RECOVERY_PARTITIONS"]
    subprocess.run([sys.executable, "-m", "flows.cli", "recovery", "init", str(rec),
                    "--partitions", str(parts)], check=True, capture_output=True)


def run_cluster(procs: list[tuple[list, dict]], kill_after: int | None = None,
                store: Path | None = None) -> bool:
    """Run the processes to their end; or SIGKILL them all once `store` has
    `kill_after` more snapshot epochs (a moment set by progress, not by the
    clock), True if they were all still running then."""
    start = last_epoch(store) if store is not None else -1
    ps = [subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                           start_new_session=True) for cmd, env in procs]
    try:
        if kill_after is not None:
            assert store is not None
            while (all(p.poll() is None for p in ps)
                   and last_epoch(store) < start + kill_after):
                time.sleep(0.05)
            if all(p.poll() is None for p in ps):
                for p in ps:
                    os.killpg(p.pid, signal.SIGKILL)
                for p in ps:
                    p.wait(30)
                return True
        for p in ps:
            p.wait(600)
            assert p.returncode == 0, p.stderr.read().decode()
        return False
    finally:
        for p in ps:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)


def sessions(brokers: str, topic: str) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for m in consume_all(brokers, topic, idle=3.0, timeout=300):
        s = orjson.loads(m.value())
        assert out.setdefault(s["session_id"], s) == s
    return out


def same(got: dict, want: dict) -> None:
    assert set(got) == set(want)
    for sid, w in want.items():  # per-worker clocks may close at end_of_input instead
        g = dict(got[sid])
        if w["close_reason"] == "inactivity" and g["close_reason"] == "end_of_input":
            g["close_reason"] = "inactivity"
        assert g == w


def test_statefulset_command_two_processes_then_kill_and_resume(tmp_path) -> None:
    brokers = bootstrap()
    lines = list(generate_hits(150_000, 8_000, seed=5,
                               start=datetime(2025, 3, 1, tzinfo=timezone.utc)))
    runs = {}
    for label, n, kill, budget in (("one", 1, False, "0"), ("two", 2, False, "0"),
                                   ("two-killed", 2, True, "0"),
                                   ("two-killed-budget", 2, True, "1MiB")):
        work = tmp_path / label
        work.mkdir()
        t = topics(brokers, 1, prefix=label)
        produce(brokers, t["hits"], lines)
        init_recovery(work)
        procs = [(cmd, {**env, "PROTOSESSIONS_MEMORY_BUDGET": budget})
                 for cmd, env in cluster_cmd_env(n, work, brokers, t)]
        if kill:
            assert run_cluster(procs, kill_after=2, store=work / "recovery"), \
                "finished before the kill"
        run_cluster(procs)
        runs[label] = sessions(brokers, t["sessions"])
        assert read_back(work / "recovery") == (budget != "0")
    assert sum(s["hit_count"] for s in runs["one"].values()) > 140_000
    same(runs["two"], runs["one"])
    same(runs["two-killed"], runs["one"])
    same(runs["two-killed-budget"], runs["one"])
