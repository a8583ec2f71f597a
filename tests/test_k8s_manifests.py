"""The Kubernetes manifests in k8s/ and the Dockerfile, checked offline.

Every manifest is validated against the Kubernetes API schema shipped by
kubernetes-validate, and the pieces that must agree with each other (and with
the app: flows.options, bytewax.run) are checked to agree. When
`kubectl` is on PATH the kustomize output is rendered and checked as well.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

yaml = pytest.importorskip("yaml")
kubernetes_validate = pytest.importorskip("kubernetes_validate")

import bytewax.run  # noqa: E402

from flows.options import OPTIONS, engine_settings, from_env, kafka_config, split_list  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "k8s"
DOCKERFILE = ROOT / "Dockerfile"
K8S_VERSION = "1.31"

# In k8s/ but deliberately not in kustomization.yaml (each file says why).
OPTIONAL = {"secret-example.yaml", "servicemonitor.yaml"}
# Kinds whose schema is not part of the Kubernetes API.
NOT_K8S_API = {"Kustomization", "ServiceMonitor"}

# PROTOSESSIONS_* options that the ConfigMap must not carry: file mode only,
# the Secret's, and the recovery store (BYTEWAX_RECOVERY_DIRECTORY, beside
# the volume).
FILE_MODE = {"input", "output", "dead-letter", "workers"}
FROM_SECRET = {"kafka-config"}
RUN_ONLY = {"recovery-dir"}
OPTION_BY_ENV = {o.env: o for o in OPTIONS}
CONFIGMAP_OPTIONS = [o for o in OPTIONS if o.name not in FILE_MODE | FROM_SECRET | RUN_ONLY]


# --- loading -----------------------------------------------------------------

def manifest_files() -> list[Path]:
    return sorted(p for p in K8S.iterdir() if p.suffix in (".yaml", ".yml"))


def load_docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


ALL = [(p.name, d) for p in manifest_files() for d in load_docs(p)]


def one(kind: str, name: str | None = None) -> dict:
    found = [d for _, d in ALL if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def kustomization() -> dict:
    return yaml.safe_load((K8S / "kustomization.yaml").read_text())


def statefulset() -> dict:
    return one("StatefulSet")


def pod_spec(workload: dict) -> dict:
    return workload["spec"]["template"]["spec"]


def main_container() -> dict:
    containers = pod_spec(statefulset())["containers"]
    assert len(containers) == 1
    return containers[0]


def init_container(name: str) -> dict:
    (c,) = [c for c in pod_spec(statefulset())["initContainers"] if c["name"] == name]
    return c


def env_of(container: dict) -> dict[str, dict]:
    return {e["name"]: e for e in container.get("env", [])}


def env_value(container: dict, name: str) -> str:
    entry = env_of(container)[name]
    assert "value" in entry, f"{container['name']}: {name} is not a literal"
    return entry["value"]


def configmap() -> dict[str, str]:
    return one("ConfigMap", "protosessions")["data"]


def headless_service() -> dict:
    (svc,) = [d for _, d in ALL if d["kind"] == "Service" and d["spec"].get("clusterIP") == "None"]
    return svc


def workloads() -> list[tuple[str, dict]]:
    return [(f"{d['kind']}/{d['metadata']['name']}", d) for _, d in ALL
            if d["kind"] in ("StatefulSet", "Deployment", "Job", "DaemonSet")]


# --- Dockerfile ----------------------------------------------------------------

def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    logical, current = [], ""
    for line in DOCKERFILE.read_text().splitlines():
        stripped = line.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if current and stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        current += stripped
        logical.append(current)
        current = ""
    out = []
    for text in logical:
        instr, _, args = text.partition(" ")
        out.append((instr.upper(), args.strip()))
    return out


def docker(instr: str) -> list[str]:
    return [args for i, args in dockerfile_instructions() if i == instr]


def docker_cmd() -> list[str]:
    (cmd,) = docker("CMD")
    value = json.loads(cmd)  # exec form only: no shell in between, signals reach python
    assert isinstance(value, list) and all(isinstance(v, str) for v in value)
    return value


def docker_env() -> dict[str, str]:
    env = {}
    for args in docker("ENV"):
        for token in shlex.split(args):
            key, sep, value = token.partition("=")
            assert sep, f"ENV {args!r}: use the KEY=value form"
            env[key] = value
    return env


def docker_exposed() -> set[int]:
    return {int(p.split("/")[0]) for args in docker("EXPOSE") for p in args.split()}


def docker_user() -> str:
    users = docker("USER")
    assert users, "the Dockerfile has no USER: the image would run as root"
    return users[-1]


def test_dockerfile_base_user_cmd_and_env():
    (base,) = docker("FROM")
    assert base.split()[0] == "python:3.11-slim"
    user, _, group = docker_user().partition(":")
    assert user.isdigit() and int(user) != 0, "USER must be a numeric non-root uid (runAsNonRoot checks it)"
    assert not group or (group.isdigit() and int(group) != 0)
    assert docker("WORKDIR") == ["/app"]
    assert docker_cmd() == ["python", "-m", "flows.launch"]
    assert not docker("ENTRYPOINT"), "an ENTRYPOINT would change what the StatefulSet's command means"
    env = docker_env()
    assert env["PYTHONUNBUFFERED"] == "1"
    assert env["BYTEWAX_DATAFLOW_API_ENABLED"] == "true"
    assert env["BYTEWAX_DATAFLOW_API_PORT"] == "3030"
    # The API server writes dataflow.json there; "." (the default) is not writable.
    assert env["BYTEWAX_DATAFLOW_API_CACHE_PATH"] == "/tmp"
    assert docker_exposed() == {9999, 3030}


def test_dockerfile_installs_the_project_without_dev_extra():
    runs = " ".join(docker("RUN"))
    assert re.search(r"pip install /tmp/src(\s|$)", runs), runs
    assert "[dev]" not in runs and "-e " not in runs
    copied = [shlex.split(args)[:-1] for args in docker("COPY")]
    sources = {s for srcs in copied for s in srcs if not s.startswith("--")}
    assert {"pyproject.toml", "README.md", "protosessions", "flows"} <= sources
    # Each copied path must survive the allow-list in .dockerignore.
    ignore = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
              if line.strip() and not line.startswith("#")]
    assert ignore[0] == "*"
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    assert sources <= allowed, sources - allowed
    for src in sources:
        assert (ROOT / src).exists(), src


# --- schema and kustomization ----------------------------------------------------

API_DOCS = [(n, d) for n, d in ALL if d["kind"] not in NOT_K8S_API]  # not Kubernetes API kinds


@pytest.mark.parametrize("name,doc", API_DOCS,
                         ids=[f"{n}:{d['kind']}/{d['metadata']['name']}" for n, d in API_DOCS])
def test_manifest_validates_against_kubernetes_schema(name, doc):
    kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_kustomization_lists_every_manifest_but_the_optional_ones():
    listed = kustomization()["resources"]
    assert len(listed) == len(set(listed))
    present = {p.name for p in manifest_files()} - {"kustomization.yaml"}
    assert set(listed) == present - OPTIONAL
    assert OPTIONAL <= present, "documented optional files are missing"
    for name in OPTIONAL:
        assert "kustomization.yaml" in (K8S / name).read_text(), f"{name} must say why it is not listed"


def test_optional_servicemonitor_selects_the_metrics_service():
    monitor = one("ServiceMonitor")
    metrics = one("Service", "protosessions-metrics")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= metrics["metadata"]["labels"].items()
    ports = {p["name"] for p in metrics["spec"]["ports"]}
    assert all(e["port"] in ports for e in monitor["spec"]["endpoints"])


def test_example_secret_matches_the_secret_reference():
    secret = one("Secret")
    ref = env_of(main_container())["PROTOSESSIONS_KAFKA_CONFIG"]["valueFrom"]["secretKeyRef"]
    assert ref["name"] == secret["metadata"]["name"] == "protosessions-kafka"
    assert ref["key"] in secret["stringData"] and ref.get("optional") is True
    kafka_config(split_list(secret["stringData"][ref["key"]]))  # key=value pairs, one per line


def test_images_are_the_one_the_kustomization_names():
    (image,) = kustomization()["images"]
    for _, w in workloads():
        spec = pod_spec(w)
        for c in spec.get("initContainers", []) + spec["containers"]:
            assert c["image"].split(":")[0] == image["name"]


# --- the container is the image ----------------------------------------------------

def test_statefulset_runs_the_dockerfile_cmd():
    c = main_container()
    assert c.get("command", []) + c.get("args", []) == docker_cmd()


def test_container_ports_match_expose():
    ports = {p["name"]: p["containerPort"] for p in main_container()["ports"]}
    assert set(ports.values()) == docker_exposed() == {9999, 3030}
    assert ports["cluster"] == 9999 and ports["api"] == 3030
    assert env_value(main_container(), "BYTEWAX_DATAFLOW_API_PORT") == str(ports["api"])


# --- configuration -------------------------------------------------------------------

def test_configmap_keys_are_real_options_and_cover_kafka_and_engine():
    data = configmap()
    assert all(isinstance(v, str) for v in data.values()), "ConfigMap values must be strings"
    keys = {k for k in data if k.startswith("PROTOSESSIONS_")}
    unknown = keys - set(OPTION_BY_ENV)
    assert not unknown, f"not options in flows.options: {unknown}"
    assert keys == {o.env for o in CONFIGMAP_OPTIONS}
    engine = {o.env for o in OPTIONS if o.engine}
    kafka = {o.env for o in OPTIONS if "kafka" in o.name or o.name.endswith("-topic")}
    assert engine <= keys
    assert (kafka - keys) == {"PROTOSESSIONS_KAFKA_CONFIG"}  # that one comes from the Secret
    assert "PROTOSESSIONS_KAFKA_CONFIG" in env_of(main_container())


def test_configmap_values_are_the_defaults_and_parse():
    data = configmap()
    for o in CONFIGMAP_OPTIONS:
        if o.default is None:  # no default (the brokers): must be set to something
            assert data[o.env].strip()
            continue
        expected = str(o.default).lower() if o.kind == "bool" else str(o.default)
        assert data[o.env] == expected, f"{o.env}: {data[o.env]!r} is not the default {expected!r}"
    values = from_env({k: v for k, v in data.items() if k.startswith("PROTOSESSIONS_")})
    engine_settings(values)  # raises on a value the engine rejects
    assert values["kafka_brokers"]


def test_run_only_options_are_not_set_and_bytewax_intervals_match_their_defaults():
    for _, w in workloads():
        spec = pod_spec(w)
        for c in spec.get("initContainers", []) + spec["containers"]:
            names = set(env_of(c))
            assert not {OPTIONS_ENV(n) for n in RUN_ONLY | FILE_MODE} & names, c["name"]
    data = configmap()
    assert not {OPTIONS_ENV(n) for n in RUN_ONLY | FILE_MODE | FROM_SECRET} & set(data)
    # One spelling: the intervals are PROTOSESSIONS_* durations, which
    # `python -m flows.launch` hands to Bytewax (tests/test_launch.py).
    assert not {"BYTEWAX_SNAPSHOT_INTERVAL", "BYTEWAX_RECOVERY_BACKUP_INTERVAL"} & set(data)
    assert int(data["BYTEWAX_WORKERS_PER_PROCESS"]) >= 1


def OPTIONS_ENV(name: str) -> str:
    (o,) = [o for o in OPTIONS if o.name == name]
    return o.env


def bytewax_sources() -> str:
    """Where Bytewax reads its environment: run.py, and the Rust core for the API server."""
    pkg = Path(bytewax.run.__file__).parent
    text = Path(bytewax.run.__file__).read_text()
    for lib in pkg.glob("_bytewax*.so"):
        text += "\n".join(re.findall(r"BYTEWAX_[A-Z_]+", lib.read_bytes().decode("latin-1")))
    return text


def test_bytewax_variables_exist():
    names = {k for k in configmap() if k.startswith("BYTEWAX_")} | {k for k in docker_env() if k.startswith("BYTEWAX_")}
    for _, w in workloads():
        spec = pod_spec(w)
        for c in spec.get("initContainers", []) + spec["containers"]:
            names |= {n for n in env_of(c) if n.startswith("BYTEWAX_")}
    run_py = Path(bytewax.run.__file__).read_text()
    sources = bytewax_sources()
    for name in sorted(names):
        assert name in sources, f"{name} is read by neither bytewax/run.py nor the Bytewax core"
    # The launcher settings proper are all in run.py:
    for name in ("BYTEWAX_POD_NAME", "BYTEWAX_STATEFULSET_NAME", "BYTEWAX_HOSTFILE_PATH",
                 "BYTEWAX_RECOVERY_DIRECTORY", "BYTEWAX_WORKERS_PER_PROCESS"):
        assert name in run_py
        assert name in names, f"{name} is not set anywhere"
    # Setting BYTEWAX_PROCESS_ID or BYTEWAX_ADDRESSES would override the pod-name /
    # hostfile derivation in run.py.
    assert not {"BYTEWAX_PROCESS_ID", "BYTEWAX_ADDRESSES"} & names


def test_recovery_wiring():
    main = main_container()
    init = init_container("recovery-init")
    path = env_value(main, "BYTEWAX_RECOVERY_DIRECTORY")
    assert env_value(init, "BYTEWAX_RECOVERY_DIRECTORY") == path
    for c in (main, init):
        (mount,) = [m for m in c["volumeMounts"] if m["mountPath"] == path]
        assert not mount.get("readOnly")
        (volume,) = [v for v in pod_spec(statefulset())["volumes"] if v["name"] == mount["name"]]
        claim = volume["persistentVolumeClaim"]["claimName"]
    pvc = one("PersistentVolumeClaim", claim)
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"], "all processes share one recovery directory"
    assert "volumeClaimTemplates" not in statefulset()["spec"]
    partitions = int(configmap()["RECOVERY_PARTITIONS"])
    total_workers = statefulset()["spec"]["replicas"] * int(configmap()["BYTEWAX_WORKERS_PER_PROCESS"])
    assert partitions >= total_workers
    # The API server's dataflow.json goes to a writable volume.
    cache = env_value(main, "BYTEWAX_DATAFLOW_API_CACHE_PATH")
    assert any(m["mountPath"] == cache for m in main["volumeMounts"])


# --- security, probes, resources ---------------------------------------------------

def all_pod_containers():
    for wname, w in workloads():
        spec = pod_spec(w)
        for c in spec.get("initContainers", []) + spec["containers"]:
            yield wname, spec, c


@pytest.mark.parametrize("wname,spec,c", list(all_pod_containers()),
                         ids=[f"{w}/{c['name']}" for w, _, c in all_pod_containers()])
def test_containers_cannot_run_as_root_or_escalate(wname, spec, c):
    pod = spec.get("securityContext", {})
    sc = c.get("securityContext", {})
    assert sc.get("runAsNonRoot", pod.get("runAsNonRoot")) is True
    uid = sc.get("runAsUser", pod.get("runAsUser"))
    assert isinstance(uid, int) and uid != 0
    assert str(uid) == docker_user().partition(":")[0], "runAsUser should be the image's USER"
    assert sc.get("readOnlyRootFilesystem") is True
    assert sc.get("allowPrivilegeEscalation") is False
    assert "ALL" in sc.get("capabilities", {}).get("drop", [])
    assert not sc.get("privileged")
    seccomp = sc.get("seccompProfile", pod.get("seccompProfile", {}))
    assert seccomp.get("type") == "RuntimeDefault"
    assert spec.get("automountServiceAccountToken") is False
    for key in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(c.get("resources", {}).get(key, {})), f"{c['name']}: resources.{key}"
    # With a read-only root, /tmp must be a volume wherever Python may need it.
    if c["name"] != "hostfile":
        assert any(m["mountPath"] == "/tmp" for m in c.get("volumeMounts", []))


def test_probes_hit_the_api_port():
    c = main_container()
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    for probe in ("readinessProbe", "livenessProbe"):
        spec = c[probe]
        action = spec.get("httpGet") or spec.get("tcpSocket")
        assert action, probe
        port = action["port"]
        assert ports.get(port, port) == 3030
        if "httpGet" in spec:
            assert spec["httpGet"]["path"] == "/metrics"
    assert isinstance(pod_spec(statefulset()).get("terminationGracePeriodSeconds"), int)


def test_prometheus_annotations():
    for meta in (statefulset()["spec"]["template"]["metadata"], one("Service", "protosessions-metrics")["metadata"]):
        ann = meta["annotations"]
        assert ann["prometheus.io/scrape"] == "true"
        assert ann["prometheus.io/port"] == "3030"
        assert ann["prometheus.io/path"] == "/metrics"


# --- the cluster: services, PDB, process ids, hostfile --------------------------------

def test_services_and_pdb_select_the_statefulset_pods():
    sts = statefulset()
    labels = sts["spec"]["template"]["metadata"]["labels"]
    assert sts["spec"]["selector"]["matchLabels"].items() <= labels.items()
    svc = headless_service()
    assert svc["spec"]["clusterIP"] == "None"
    assert svc["spec"]["publishNotReadyAddresses"] is True
    assert svc["spec"]["selector"].items() <= labels.items()
    assert sts["spec"]["serviceName"] == svc["metadata"]["name"]
    (cluster_port,) = svc["spec"]["ports"]
    assert cluster_port["port"] == 9999 and cluster_port["targetPort"] in ("cluster", 9999)
    metrics = one("Service", "protosessions-metrics")
    assert metrics["spec"]["selector"].items() <= labels.items()
    assert [p["port"] for p in metrics["spec"]["ports"]] == [3030]
    pdb = one("PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert pdb["spec"].get("maxUnavailable") == 1
    assert sts["spec"]["podManagementPolicy"] == "Parallel"


def test_process_id_is_the_pod_ordinal():
    sts = statefulset()
    main = main_container()
    assert env_of(main)["BYTEWAX_POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    name = env_value(main, "BYTEWAX_STATEFULSET_NAME")
    assert name == sts["metadata"]["name"]
    # What bytewax/run.py does with them:
    for i in range(sts["spec"]["replicas"]):
        assert int(f"{sts['metadata']['name']}-{i}".replace(name + "-", "")) == i


def test_replica_count_has_one_source():
    sts = statefulset()
    replicas = sts["spec"]["replicas"]
    init = init_container("hostfile")
    assert env_value(init, "REPLICAS") == str(replicas)
    k = kustomization()
    (count,) = [r for r in k["replicas"] if r["name"] == sts["metadata"]["name"]]
    assert count["count"] == replicas
    (repl,) = k["replacements"]
    assert repl["source"] == {"kind": "StatefulSet", "name": sts["metadata"]["name"], "fieldPath": "spec.replicas"}
    (target,) = repl["targets"]
    assert target["fieldPaths"] == [
        "spec.template.spec.initContainers.[name=hostfile].env.[name=REPLICAS].value"]


def script_of(container: dict) -> str:
    command = container["command"]
    assert command[:2] == ["sh", "-c"] and len(command) == 3
    return command[2]


def test_hostfile_lists_every_replica(tmp_path):
    """Run the init container's script as is and read the hostfile it writes."""
    sts = statefulset()
    init = init_container("hostfile")
    main = main_container()
    path = env_value(main, "BYTEWAX_HOSTFILE_PATH")
    assert env_value(init, "BYTEWAX_HOSTFILE_PATH") == path
    hostdir = os.path.dirname(path)
    (init_mount,) = [m for m in init["volumeMounts"] if m["mountPath"] == hostdir]
    (main_mount,) = [m for m in main["volumeMounts"] if m["mountPath"] == hostdir]
    assert init_mount["name"] == main_mount["name"]
    assert env_value(init, "BYTEWAX_STATEFULSET_NAME") == sts["metadata"]["name"]
    assert env_value(init, "HEADLESS_SERVICE") == sts["spec"]["serviceName"]
    (cluster_port,) = headless_service()["spec"]["ports"]
    assert env_value(init, "CLUSTER_PORT") == str(cluster_port["port"])
    assert env_of(init)["POD_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
    domain_ref = env_of(init)["CLUSTER_DOMAIN"]["valueFrom"]["configMapKeyRef"]
    domain = configmap()[domain_ref["key"]]

    env = {k: e["value"] for k, e in env_of(init).items() if "value" in e}
    env.update(POD_NAMESPACE="analytics", CLUSTER_DOMAIN=domain, PATH=os.environ["PATH"],
               BYTEWAX_HOSTFILE_PATH=str(tmp_path / "hostfile"))
    subprocess.run(["sh", "-c", script_of(init)], env=env, check=True, capture_output=True)
    lines = (tmp_path / "hostfile").read_text().splitlines()
    n = sts["spec"]["replicas"]
    assert lines == [f"protosessions-{i}.protosessions.analytics.svc.{domain}:9999" for i in range(n)]
    # bytewax.run joins the non-empty lines with ";" and process i is line i.
    assert len([ln for ln in lines if ln.strip()]) == n


# --- the recovery init script ------------------------------------------------------

STUB = """#!{python}
# `protosessions` as the image installs it, logging each call.
import sys
sys.path.insert(0, {root!r})
with open({log!r}, "a") as log:
    log.write(" ".join(sys.argv[1:]) + "\\n")
from flows.cli import main
sys.exit(main(sys.argv[1:]))
"""


def install_stub(tmp_path: Path, text: str) -> None:
    (tmp_path / "bin").mkdir(exist_ok=True)
    stub = tmp_path / "bin" / "protosessions"
    stub.write_text(text)
    stub.chmod(stub.stat().st_mode | stat.S_IXUSR)


def recovery_env(tmp_path: Path, pod: str) -> dict[str, str]:
    init = init_container("recovery-init")
    env = {k: e["value"] for k, e in env_of(init).items() if "value" in e}
    env.update(BYTEWAX_RECOVERY_DIRECTORY=str(tmp_path / "recovery"), POD_NAME=pod,
               RECOVERY_PARTITIONS=configmap()["RECOVERY_PARTITIONS"],
               PATH=f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    return env


def test_recovery_init_creates_partitions_once(tmp_path):
    """Run the init container's script with the real `protosessions recovery init`:
    pod 0 initialises once, pod 1 waits for it, restarts leave the partitions alone."""
    (tmp_path / "recovery").mkdir()
    log = tmp_path / "calls.log"
    install_stub(tmp_path, STUB.format(python=sys.executable, root=str(ROOT), log=str(log)))
    script = script_of(init_container("recovery-init"))
    n = int(configmap()["RECOVERY_PARTITIONS"])
    expected = {f"part-{i}.sqlite3" for i in range(n)}

    waiting = subprocess.Popen(["sh", "-c", script], env=recovery_env(tmp_path, "protosessions-1"),
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        time.sleep(0.5)
        assert waiting.poll() is None, "pod 1 must wait for pod 0 to initialise"
        subprocess.run(["sh", "-c", script], env=recovery_env(tmp_path, "protosessions-0"),
                       check=True, capture_output=True)
        assert waiting.wait(timeout=15) == 0
    finally:
        if waiting.poll() is None:
            waiting.kill()
    assert {p.name for p in (tmp_path / "recovery").iterdir()} == expected
    assert len(log.read_text().splitlines()) == 1
    # A restart finds the partitions and leaves them alone (a second init_db_dir
    # on the same files would fail).
    before = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "recovery").iterdir()}
    for pod in ("protosessions-0", "protosessions-1"):
        subprocess.run(["sh", "-c", script], env=recovery_env(tmp_path, pod), check=True, capture_output=True)
    assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "recovery").iterdir()} == before
    assert len(log.read_text().splitlines()) == 1


def test_recovery_volume_is_writable_by_the_job_alone(tmp_path):
    """The store is trusted (snapshots are pickles): pod 0's init takes the
    other users' access away from the directory, and the partitions it creates
    are the job user's alone; the pods run as that user, with it as fsGroup."""
    pod = pod_spec(statefulset())["securityContext"]
    assert pod["runAsUser"] == pod["runAsGroup"] == pod["fsGroup"] != 0
    recovery = tmp_path / "recovery"
    recovery.mkdir()
    recovery.chmod(0o777)  # as some provisioners create it
    install_stub(tmp_path, STUB.format(python=sys.executable, root=str(ROOT), log=str(tmp_path / "log")))
    script = script_of(init_container("recovery-init"))
    subprocess.run(["sh", "-c", script], env=recovery_env(tmp_path, "protosessions-0"), check=True,
                   capture_output=True)
    assert recovery.stat().st_mode & 0o007 == 0
    parts = list(recovery.glob("part-*.sqlite3"))
    assert parts and all(p.stat().st_mode & 0o077 == 0 for p in parts)
    recovery.chmod(0o777)  # a restart takes it away again
    subprocess.run(["sh", "-c", script], env=recovery_env(tmp_path, "protosessions-1"), check=True,
                   capture_output=True)
    assert recovery.stat().st_mode & 0o007 == 0


# --- the NetworkPolicy ---------------------------------------------------------------

SCRAPER = {"protosessions-metrics-scraper": "true"}


def network_policy() -> dict:
    return one("NetworkPolicy", "protosessions")


def rule_for(port: int) -> dict:
    (rule,) = [r for r in network_policy()["spec"]["ingress"]
               if any(p["port"] == port for p in r["ports"])]
    return rule


def test_network_policy_covers_every_port_of_the_job():
    spec = network_policy()["spec"]
    assert spec["podSelector"]["matchLabels"] == statefulset()["spec"]["selector"]["matchLabels"]
    assert spec["policyTypes"] == ["Ingress"]
    ports = {(p["port"], p.get("protocol", "TCP")) for r in spec["ingress"] for p in r["ports"]}
    assert ports == {(p["containerPort"], p["protocol"]) for p in main_container()["ports"]}
    for rule in spec["ingress"]:  # a rule without peers or ports would let everyone in
        assert rule.get("from") and rule.get("ports")
        for peer in rule["from"]:
            assert "ipBlock" not in peer
            for selector in peer.values():
                assert selector.get("matchLabels"), "an empty selector matches every pod"


def test_cluster_port_is_open_to_the_job_pods_only():
    (cluster_port,) = headless_service()["spec"]["ports"]
    (peer,) = rule_for(cluster_port["port"])["from"]
    assert set(peer) == {"podSelector"}
    labels = statefulset()["spec"]["template"]["metadata"]["labels"]
    selector = peer["podSelector"]["matchLabels"]
    assert selector.items() <= labels.items()
    assert selector == statefulset()["spec"]["selector"]["matchLabels"]


def test_api_port_is_open_to_metrics_scrapers_only():
    api = {p["name"]: p["containerPort"] for p in main_container()["ports"]}["api"]
    peers = rule_for(api)["from"]
    assert peers
    for peer in peers:
        assert set(peer) <= {"podSelector", "namespaceSelector"}
        for selector in peer.values():
            assert selector["matchLabels"] == SCRAPER
    # the job's own pods are not scrapers
    assert not SCRAPER.items() <= statefulset()["spec"]["template"]["metadata"]["labels"].items()


# --- the kustomize build, when kubectl is here ------------------------------------------

@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl (kustomize) not installed")
def test_kustomize_build_validates_and_keeps_replicas_in_sync(tmp_path):
    def render(directory: Path) -> list[dict]:
        out = subprocess.run(["kubectl", "kustomize", str(directory)], check=True,
                             capture_output=True, text=True).stdout
        return [d for d in yaml.safe_load_all(out) if d]

    docs = render(K8S)
    assert {d["metadata"].get("namespace") for d in docs if d["kind"] != "Namespace"} == {"protosessions"}
    for d in docs:
        kubernetes_validate.validate(d, K8S_VERSION, strict=True)
    # Changing the count in the kustomization changes the hostfile too.
    copy = tmp_path / "k8s"
    shutil.copytree(K8S, copy)
    k = (copy / "kustomization.yaml").read_text()
    (copy / "kustomization.yaml").write_text(re.sub(r"count: \d+", "count: 5", k))
    (sts,) = [d for d in render(copy) if d["kind"] == "StatefulSet"]
    (init,) = [c for c in sts["spec"]["template"]["spec"]["initContainers"] if c["name"] == "hostfile"]
    assert sts["spec"]["replicas"] == 5
    assert env_value(init, "REPLICAS") == "5"


# --- the topics Job ---------------------------------------------------------------

def test_topics_job_passes_the_kafka_secret_as_flags(tmp_path):
    job = one("Job", "protosessions-topics")
    spec = pod_spec(job)
    assert spec["restartPolicy"] in ("OnFailure", "Never")
    (c,) = spec["containers"]
    assert {e["configMapRef"]["name"] for e in c["envFrom"]} == {"protosessions"}
    assert env_of(c)["PROTOSESSIONS_KAFKA_CONFIG"] == env_of(main_container())["PROTOSESSIONS_KAFKA_CONFIG"]
    install_stub(tmp_path, f"#!{sys.executable}\nimport json, sys\nprint(json.dumps(sys.argv[1:]))\n")
    path = f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}"
    secret = one("Secret")["stringData"]["kafka-config"]
    base = ["topics", "create", "--partitions", "8", "--replication-factor", "3"]
    for value, extra in ((None, []), ("", []), (secret, [a for kv in split_list(secret) for a in ("--kafka-config", kv)]),
                         ("sasl.password=a b*c", ["--kafka-config", "sasl.password=a b*c"]),
                         ("security.protocol=SASL_SSL\n"
                          "sasl.oauthbearer.extensions=a=1,b=2\n",
                          ["--kafka-config", "security.protocol=SASL_SSL",
                           "--kafka-config", "sasl.oauthbearer.extensions=a=1,b=2"])):
        env = {"PATH": path} if value is None else {"PATH": path, "PROTOSESSIONS_KAFKA_CONFIG": value}
        out = subprocess.run(["sh", "-c", script_of(c)], env=env, cwd=tmp_path, check=True,
                             capture_output=True, text=True).stdout
        assert json.loads(out) == base + extra
    # The real parser takes those flags.
    from flows.cli import build_parser
    args = build_parser().parse_args(base + ["--kafka-config", "security.protocol=SASL_SSL"])
    assert args.topics_command == "create" and args.kafka_config == ["security.protocol=SASL_SSL"]
