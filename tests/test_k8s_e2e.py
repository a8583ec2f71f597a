"""k8s/ on a real one-node cluster (scripts/k8s.sh), through k8s-local/, with
hits produced live to a 3-partition topic while the job runs (issue 20):
- 2 replicas form the cluster and write sessions;
- one pod killed hard, one deleted gracefully: the cluster resumes from the
  shared volume, the output gap of each measured and held (30 s), no
  container restarts (no kubelet back-off), no traceback in any pod;
- scaled 2 -> 3 replicas by the manifests: output again within 60 s;
- /metrics through the protosessions-metrics Service;
- at the end, the sessions on the sessions topic are those of the file run of
  the partitions' time merge, and no session_id has two contents.

Run by scripts/k8s-e2e.sh (cluster up, image, broker, these tests, down),
inside the cluster's network namespace; collected only there (conftest.py).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import threading
import time
import urllib.request
import zlib
from pathlib import Path

import orjson
import pytest
from confluent_kafka import Consumer, Producer

from flows.topics import create_topics
from protosessions.config import Settings
from protosessions.engine import Engine
from protosessions.merge import merged
from protosessions.timefmt import format_time_us, wall_now_us

pytestmark = pytest.mark.k8s
ROOT = Path(__file__).resolve().parent.parent
NS = "protosessions"
VOLUME = Path("/var/lib/psk8s/volumes/protosessions-recovery")   # k8s-local/pv-recovery.yaml
SESSION_S = 4
GAP_AFTER_POD_LOSS_S = 30
GAP_AFTER_SCALE_S = 60
FIGURES: dict[str, float] = {}


def kubectl(*args: str, timeout: float = 120, check: bool = True) -> str:
    r = subprocess.run(["kubectl", *args], capture_output=True, text=True, timeout=timeout)
    if check and r.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(args)}: {r.stderr.strip() or r.stdout.strip()}")
    return r.stdout


def pods() -> dict[str, dict]:
    out = json.loads(kubectl("-n", NS, "get", "pods", "-l",
                             "app.kubernetes.io/component=dataflow", "-o", "json"))
    return {p["metadata"]["name"]: p for p in out["items"]}


def running(n: int) -> bool:
    ps = pods()
    return len(ps) == n and all(
        p["status"].get("phase") == "Running" and p["metadata"].get("deletionTimestamp") is None
        for p in ps.values())


def restarts(name: str) -> int:
    p = pods()[name]
    return sum(c.get("restartCount", 0) for c in p["status"].get("containerStatuses", []))


def logs(name: str) -> str:
    return kubectl("-n", NS, "logs", name, "-c", "protosessions", check=False)


def wait(what: str, cond, timeout: float) -> None:
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            raise AssertionError(f"{what}: not within {timeout:g}s")
        time.sleep(0.5)


def write_overlay(directory: Path, replicas: int) -> Path:
    """k8s-local/ with the test's replica count (and the replacement that copies
    it into the hostfile, as k8s/README.md says an overlay must repeat) and
    short sessions, so that they close while the test runs."""
    directory.mkdir(parents=True, exist_ok=True)
    base = os.path.relpath(ROOT / "k8s-local", directory)
    (directory / "kustomization.yaml").write_text(f"""\
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources: [{base}]
replicas: [{{name: protosessions, count: {replicas}}}]
replacements:
  - source: {{kind: StatefulSet, name: protosessions, fieldPath: spec.replicas}}
    targets:
      - select: {{kind: StatefulSet, name: protosessions}}
        fieldPaths:
          - spec.template.spec.initContainers.[name=hostfile].env.[name=REPLICAS].value
patches:
  - patch: |-
      apiVersion: v1
      kind: ConfigMap
      metadata: {{name: protosessions, namespace: {NS}}}
      data: {{PROTOSESSIONS_SESSION_DURATION: "{SESSION_S}s", PROTOSESSIONS_TICK_INTERVAL: "1s"}}
""")
    return directory


class LiveHits(threading.Thread):
    """Hits stamped now, in time order, to 3 partitions: 20 clients on visits of
    3 s with 8 s pauses (sessions end after 4 s), ~15 hits/s."""

    def __init__(self, brokers: str, topic: str) -> None:
        super().__init__(daemon=True)
        self.brokers, self.topic = brokers, topic
        self.sent: dict[int, list[bytes]] = {0: [], 1: [], 2: []}
        self.stop = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            p = Producer({"bootstrap.servers": self.brokers, "enable.idempotence": True,
                          "linger.ms": 5})
            rng = random.Random(20)
            clients = [f"c{i}" for i in range(20)]
            phase = {c: rng.uniform(0, 11) for c in clients}
            start, n = time.monotonic(), 0
            while not self.stop.is_set():
                elapsed = time.monotonic() - start
                for c in clients:
                    if (elapsed + phase[c]) % 11 < 3 and rng.random() < 0.3:
                        n += 1
                        raw = orjson.dumps({"id": f"h{n}", "client_id": c, "property_id": "G-1",
                                            "server_received_time": format_time_us(wall_now_us())})
                        part = zlib.crc32(c.encode()) % 3
                        p.produce(self.topic, value=raw, key=c, partition=part)
                        self.sent[part].append(raw)
                p.poll(0)
                time.sleep(0.1)
            assert p.flush(30) == 0
        except BaseException as e:  # reported by the test that ends the stream
            self.error = e


class Sessions(threading.Thread):
    """Every record of the sessions topic: (broker append time s, session_id, value)."""

    def __init__(self, brokers: str, topic: str) -> None:
        super().__init__(daemon=True)
        self.records: list[tuple[float, str, bytes]] = []
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.c = Consumer({"bootstrap.servers": brokers, "group.id": f"e2e-{os.getpid()}",
                           "auto.offset.reset": "earliest", "enable.auto.commit": False})
        self.c.subscribe([topic])

    def run(self) -> None:
        while not self.stop.is_set():
            m = self.c.poll(0.5)
            if m is None or m.error():
                continue
            s = orjson.loads(m.value())
            with self.lock:
                self.records.append((m.timestamp()[1] / 1000, s["session_id"], m.value()))
        self.c.close()

    def times(self) -> list[float]:
        with self.lock:
            return sorted(t for t, _, _ in self.records)


def output_gap(sessions: Sessions, t0: float, limit: float, settled: float | None = None) -> float:
    """The longest stretch without a session record from just before `t0`
    until output flows again (5 records after the longest stretch and after
    `settled`, when the disruption is over, and none missing for 3 s); fails
    past `limit`."""
    end = time.time() + limit + 30
    settled = t0 if settled is None else settled
    while True:
        now = time.time()
        ts = sessions.times()
        before = [t for t in ts if t <= t0]
        seq = ([before[-1]] if before else [t0]) + [t for t in ts if t > t0] + [now]
        gaps = [(b - a, i) for i, (a, b) in enumerate(zip(seq, seq[1:]))]
        gap, i = max(gaps)
        after = [t for t in seq[i + 1:-1] if t > settled]
        flowing = len(after) >= 5 and now - seq[-2] < 3
        if flowing:
            return gap
        if now > end or now - seq[-2] > limit:
            raise AssertionError(f"no output for {now - seq[-2]:.1f}s after t0 (limit {limit}s)")
        time.sleep(0.5)


@pytest.fixture(scope="module")
def deployed(tmp_path_factory):
    brokers = os.environ.get("PROTOSESSIONS_TEST_KAFKA")
    if not brokers:
        pytest.fail("PROTOSESSIONS_TEST_KAFKA is not set: run through scripts/k8s-e2e.sh")
    r = subprocess.run(["kubectl", "get", "node", "-o",
                        "jsonpath={.items[0].status.conditions[?(@.type=='Ready')].status}"],
                       capture_output=True, text=True, timeout=30)
    if r.returncode != 0 or r.stdout.strip() != "True":
        pytest.fail(f"the local cluster is not up (scripts/k8s.sh up): {r.stderr.strip() or r.stdout}")
    create_topics(brokers, ["hits"], 3, 1, {})
    create_topics(brokers, ["sessions", "hits.dead"], 1, 1, {})
    if VOLUME.exists():
        shutil.rmtree(VOLUME)
    VOLUME.mkdir(parents=True)
    os.chown(VOLUME, 10001, 10001)
    VOLUME.chmod(0o700)
    work = tmp_path_factory.mktemp("overlay")
    sessions = Sessions(brokers, "sessions")
    sessions.start()
    hits = LiveHits(brokers, "hits")
    t0 = time.time()
    kubectl("apply", "-k", str(write_overlay(work / "two", 2)))
    hits.start()
    try:
        yield {"brokers": brokers, "work": work, "hits": hits, "sessions": sessions, "t0": t0}
    finally:
        hits.stop.set()
        sessions.stop.set()
        for name in pods():
            print(f"--- logs of {name}\n{logs(name)[-3000:]}")
        print("figures:", json.dumps({k: round(v, 1) for k, v in FIGURES.items()}))
        kubectl("delete", "namespace", NS, "--wait=false", check=False)


def test_two_replicas_form_the_cluster_and_write_sessions(deployed) -> None:
    wait("2 pods Running", lambda: running(2), 120)
    wait("first sessions", lambda: len(deployed["sessions"].times()) >= 5, 120)
    FIGURES["first_output_s"] = deployed["sessions"].times()[4] - deployed["t0"]
    time.sleep(10)


def check_survivor(name: str, before: int) -> None:
    """No container restart (so no kubelet back-off), one line, no traceback."""
    assert restarts(name) == before, f"{name} restarted"
    text = logs(name)
    assert "Traceback" not in text and "PanicException" not in text, text[-2000:]
    assert "protosessions: lost a peer" in text or "protosessions: peer " in text


def test_hard_kill_resumes_within_30s(deployed) -> None:
    before = restarts("protosessions-0")
    t0 = time.time()
    kubectl("-n", NS, "delete", "pod", "protosessions-1", "--force", "--grace-period=0")
    gap = output_gap(deployed["sessions"], t0, GAP_AFTER_POD_LOSS_S)
    FIGURES["hard_kill_gap_s"] = gap
    assert gap <= GAP_AFTER_POD_LOSS_S
    check_survivor("protosessions-0", before)


def test_graceful_delete_stops_in_the_grace_period_and_resumes_within_30s(deployed) -> None:
    wait("2 pods Running", lambda: running(2), 60)
    before = restarts("protosessions-1")
    follow = subprocess.Popen(["kubectl", "-n", NS, "logs", "-f", "protosessions-0",
                               "-c", "protosessions", "--tail", "5"],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    time.sleep(1)
    t0 = time.time()
    kubectl("-n", NS, "delete", "pod", "protosessions-0", "--wait=true", timeout=60)
    FIGURES["graceful_delete_s"] = time.time() - t0
    tail, _ = follow.communicate(timeout=30)
    assert "stopped after delivering what was produced" in tail, tail
    assert "Traceback" not in tail
    assert FIGURES["graceful_delete_s"] < 30
    gap = output_gap(deployed["sessions"], t0, GAP_AFTER_POD_LOSS_S)
    FIGURES["graceful_gap_s"] = gap
    assert gap <= GAP_AFTER_POD_LOSS_S
    check_survivor("protosessions-1", before)


def test_scale_to_three_by_the_manifests_resumes_within_60s(deployed) -> None:
    wait("2 pods Running", lambda: running(2), 60)
    t0 = time.time()
    kubectl("apply", "-k", str(write_overlay(deployed["work"] / "three", 3)))
    kubectl("-n", NS, "rollout", "status", "statefulset/protosessions", "--timeout=120s",
            timeout=130)
    FIGURES["scale_rollout_s"] = time.time() - t0
    gap = output_gap(deployed["sessions"], t0, GAP_AFTER_SCALE_S, settled=time.time())
    FIGURES["scale_gap_s"] = gap
    assert gap <= GAP_AFTER_SCALE_S
    wait("3 pods Running", lambda: running(3), 60)
    for name, p in pods().items():
        assert restarts(name) == 0 or "Traceback" not in logs(name)


def test_metrics_through_the_metrics_service(deployed) -> None:
    ip = kubectl("-n", NS, "get", "service", "protosessions-metrics",
                 "-o", "jsonpath={.spec.clusterIP}").strip()
    text = urllib.request.urlopen(f"http://{ip}:3030/metrics", timeout=10).read().decode()
    values = {}
    for line in text.splitlines():
        if line.startswith("protosessions_") and " " in line:
            name, value = line.rsplit(" ", 1)
            values[name] = float(value)
    assert values.get("protosessions_hits_in_total", 0) > 0, sorted(values)[:20]
    assert "protosessions_open_proto_sessions" in values


def test_the_sessions_are_those_of_the_time_merge(deployed) -> None:
    hits, sessions = deployed["hits"], deployed["sessions"]
    hits.stop.set()
    hits.join(60)
    assert hits.error is None, hits.error
    settings = Settings(session_duration_us=SESSION_S * 1_000_000)
    want = {}
    for _, raw in Engine(settings).run(merged([hits.sent[p] for p in range(3)], settings)):
        s = orjson.loads(raw)
        if s["close_reason"] == "end_of_input":  # the live job closes them by the wall clock
            s["close_reason"] = "inactivity"
        want[s["session_id"]] = s
    end = time.time() + 120

    def got() -> dict[str, dict]:
        out: dict[str, dict] = {}
        with sessions.lock:
            records = list(sessions.records)
        for _, sid, value in records:
            s = orjson.loads(value)
            assert out.setdefault(sid, s) == s, f"session {sid} with two contents"
        return out
    while set(got()) != set(want) and time.time() < end:
        time.sleep(1)
    time.sleep(3)  # and nothing more
    have = got()
    FIGURES["hits"] = sum(len(v) for v in hits.sent.values())
    missing, extra = set(want) - set(have), set(have) - set(want)
    assert not missing and not extra, f"{len(missing)} missing, {len(extra)} extra of {len(want)}"
    assert have == want
    FIGURES["sessions"] = len(want)
    assert FIGURES["hits"] > 300 and len(want) > 50
