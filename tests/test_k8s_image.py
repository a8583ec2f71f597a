"""The image the local cluster runs (scripts/k8s-image.sh, packed by
scripts/k8s_image.py) and the one users build from the Dockerfile keep one
contract: the same Python, user 10001, command, ports, working directory and
environment; the project installed the same way."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import sys
import tarfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = (ROOT / "scripts" / "k8s-image.sh").read_text()
DOCKERFILE = ROOT / "Dockerfile"
PYTHON_OF_SUITE = {"bookworm": "3.11", "trixie": "3.13", "bullseye": "3.9"}


def helper():
    spec = importlib.util.spec_from_file_location("k8s_image", ROOT / "scripts" / "k8s_image.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["k8s_image"] = mod  # dataclasses look their module up
    assert spec.loader is not None
    spec.loader.exec_module(mod)
    return mod


def test_the_dockerfile_contract_is_read_from_the_dockerfile() -> None:
    c = helper().contract(DOCKERFILE)
    assert c.python == "3.11"
    assert c.user == "10001:10001"
    assert c.cmd == ["python", "-m", "flows.launch"]
    assert sorted(c.ports) == ["3030/tcp", "9999/tcp"]
    assert c.workdir == "/app"
    assert c.env["BYTEWAX_DATAFLOW_API_CACHE_PATH"] == "/tmp"
    assert c.env["PYTHONUNBUFFERED"] == "1"
    sts = next(d for d in yaml.safe_load_all((ROOT / "k8s" / "statefulset.yaml").read_text()) if d)
    assert sts["spec"]["template"]["spec"]["containers"][0]["command"] == c.cmd


def test_the_local_image_has_the_dockerfiles_python_user_and_install() -> None:
    suite = re.search(r"^SUITE=(\w+)", SCRIPT, re.M).group(1)
    assert PYTHON_OF_SUITE[suite] == helper().contract(DOCKERFILE).python
    docker = DOCKERFILE.read_text()
    for cmd in ("groupadd --system --gid 10001 protosessions",
                "useradd --system --uid 10001 --gid 10001 --no-create-home"):
        assert cmd in docker and cmd in SCRIPT, cmd
    # the project from its sources, no extra (so no dev dependencies), sources dropped
    assert "pip install /tmp/src \\" in docker or "pip install /tmp/src\n" in docker
    assert re.search(r"pip install -q /tmp/src\n", SCRIPT)
    assert "rm -rf /tmp/src" in docker and "rm -rf /tmp/src" in SCRIPT
    check = 'python -c "import bytewax.run, confluent_kafka, orjson, prometheus_client, flows.options"'
    assert check in docker and check.replace('"', "'") in SCRIPT
    assert "protosessions --help > /dev/null" in docker and "protosessions --help > /dev/null" in SCRIPT
    # the venv is first on PATH, so `python` and `protosessions` are the project's
    assert re.search(r'IMAGE_PATH="\$VENV/bin:', SCRIPT) and "VENV=/opt/venv" in SCRIPT


def test_a_packed_root_filesystem_is_a_one_layer_image_with_the_contract(tmp_path) -> None:
    mod = helper()
    root = tmp_path / "root"
    (root / "opt/venv/bin").mkdir(parents=True)
    (root / "app").mkdir()
    py = root / "opt/venv/bin/python"
    py.write_text("#!/bin/sh\n")
    py.chmod(0o755)
    os.mkfifo(root / "fifo")  # not part of an image: left out like device nodes
    out = tmp_path / "image.tar"
    assert mod.main(["rootfs", "--dockerfile", str(DOCKERFILE), "--rootfs", str(root),
                     "--name", "protosessions:test", "--out", str(out),
                     "--env", "PATH=/opt/venv/bin:/usr/bin:/bin"]) == 0
    with tarfile.open(out) as tar:
        [manifest] = json.load(tar.extractfile("manifest.json"))
        assert manifest["RepoTags"] == ["protosessions:test"] and len(manifest["Layers"]) == 1
        config = json.load(tar.extractfile(manifest["Config"]))
        layer = tar.extractfile(manifest["Layers"][0]).read()
    assert manifest["Config"] == hashlib.sha256(
        json.dumps(config, sort_keys=True).encode()).hexdigest() + ".json"
    assert config["rootfs"]["diff_ids"] == ["sha256:" + hashlib.sha256(layer).hexdigest()]
    c = mod.contract(DOCKERFILE)
    cfg = config["config"]
    assert (cfg["User"], cfg["Cmd"], cfg["WorkingDir"]) == (c.user, c.cmd, c.workdir)
    assert sorted(cfg["ExposedPorts"]) == sorted(c.ports)
    env = dict(e.split("=", 1) for e in cfg["Env"])
    assert env["PATH"].startswith("/opt/venv/bin:")
    assert {k: env[k] for k in c.env} == c.env
    (tmp_path / "layer.tar").write_bytes(layer)
    with tarfile.open(tmp_path / "layer.tar") as t:
        names = {m.name: m for m in t.getmembers()}
    assert "fifo" not in names
    assert names["opt/venv/bin/python"].mode & 0o777 == 0o755


def test_the_pause_image_is_the_binary_alone(tmp_path) -> None:
    mod = helper()
    binary = tmp_path / "pause"
    binary.write_bytes(b"\x7fELF...")
    out = tmp_path / "pause.tar"
    assert mod.main(["binary", "--binary", str(binary), "--name", "psk8s.local/pause:3.10",
                     "--out", str(out)]) == 0
    with tarfile.open(out) as tar:
        [manifest] = json.load(tar.extractfile("manifest.json"))
        config = json.load(tar.extractfile(manifest["Config"]))
    assert config["config"]["Entrypoint"] == ["/pause"]
