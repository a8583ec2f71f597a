"""Container images without a registry or a container builder, for the local cluster.

`scripts/k8s-image.sh` makes the project's image from a Debian root filesystem;
this module packs such a directory (or a single static binary, for the pause
image) into a one-layer image archive in the `docker save` layout, which
`ctr images import` reads. The image's runtime contract (user, command, ports,
working directory, environment) is read from the Dockerfile itself, so the
local image and the one users build cannot drift apart
(tests/test_k8s_image.py holds them to it).

    python3 scripts/k8s_image.py contract Dockerfile
    python3 scripts/k8s_image.py rootfs --dockerfile Dockerfile --rootfs DIR --name N:T --out X.tar \
        [--env K=V ...]
    python3 scripts/k8s_image.py binary --binary /path/pause --name N:T --out X.tar
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import re
import shlex
import stat
import sys
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO


@dataclass
class Contract:
    """What the Dockerfile promises about the running image."""
    python: str = ""                       # "3.11", from FROM python:3.11-...
    user: str = ""                         # "10001:10001"
    cmd: list[str] = field(default_factory=list)
    entrypoint: list[str] = field(default_factory=list)
    ports: list[str] = field(default_factory=list)   # "9999/tcp"
    workdir: str = "/"
    env: dict[str, str] = field(default_factory=dict)


def _instructions(text: str) -> list[tuple[str, str]]:
    """(KEYWORD, arguments) per instruction: continuation lines joined, comments dropped."""
    out: list[tuple[str, str]] = []
    buf = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not buf and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        buf += line
        word, _, rest = buf.partition(" ")
        out.append((word.upper(), rest.strip()))
        buf = ""
    return out


def _exec_form(args: str) -> list[str]:
    if args.startswith("["):
        return [str(a) for a in json.loads(args)]
    return ["/bin/sh", "-c", args]


def contract(dockerfile: Path) -> Contract:
    """The runtime contract of `dockerfile` (the last stage's)."""
    c = Contract()
    for word, args in _instructions(dockerfile.read_text()):
        if word == "FROM":
            c = Contract()
            m = re.match(r"python:(\d+\.\d+)", args)
            if not m:
                raise ValueError(f"{dockerfile}: FROM {args}: not a python:X.Y image")
            c.python = m.group(1)
        elif word == "USER":
            c.user = args
        elif word == "CMD":
            c.cmd = _exec_form(args)
        elif word == "ENTRYPOINT":
            c.entrypoint = _exec_form(args)
        elif word == "EXPOSE":
            c.ports += [p if "/" in p else f"{p}/tcp" for p in args.split()]
        elif word == "WORKDIR":
            c.workdir = args
        elif word == "ENV":
            parts = shlex.split(args)
            if len(parts) >= 1 and "=" not in parts[0]:  # legacy `ENV KEY value`
                c.env[parts[0]] = " ".join(parts[1:])
            else:
                for kv in parts:
                    k, _, v = kv.partition("=")
                    c.env[k] = v
    return c


def image_config(c: Contract, diff_id: str, extra_env: dict[str, str]) -> dict:
    """The OCI/Docker image config for one layer with contract `c`."""
    env = dict(c.env)
    env.update(extra_env)
    cfg: dict = {"Env": [f"{k}={v}" for k, v in env.items()], "WorkingDir": c.workdir}
    if c.user:
        cfg["User"] = c.user
    if c.cmd:
        cfg["Cmd"] = c.cmd
    if c.entrypoint:
        cfg["Entrypoint"] = c.entrypoint
    if c.ports:
        cfg["ExposedPorts"] = {p: {} for p in c.ports}
    return {"architecture": "amd64", "os": "linux", "config": cfg,
            "rootfs": {"type": "layers", "diff_ids": [diff_id]}}


class _HashingWriter(io.RawIOBase):
    """Writes through to a file while hashing what passes (the layer's diff id)."""

    def __init__(self, f: BinaryIO) -> None:
        self.f, self.h = f, hashlib.sha256()

    def writable(self) -> bool:
        return True

    def write(self, b) -> int:  # type: ignore[override]
        self.h.update(b)
        return self.f.write(b)


def _layer_from_dir(root: Path, out: BinaryIO) -> str:
    """Tar `root` (owners and modes kept, device nodes left out: the runtime makes /dev)."""
    w = _HashingWriter(out)
    with tarfile.open(fileobj=w, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            for name in sorted(dirnames) + sorted(filenames):
                p = Path(dirpath) / name
                st = p.lstat()
                if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode) or stat.S_ISSOCK(st.st_mode) \
                        or stat.S_ISFIFO(st.st_mode):
                    continue
                tar.add(p, arcname=str(p.relative_to(root)), recursive=False)
    return "sha256:" + w.h.hexdigest()


def _layer_from_binary(binary: Path, out: BinaryIO) -> str:
    w = _HashingWriter(out)
    with tarfile.open(fileobj=w, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        info = tar.gettarinfo(str(binary), arcname=binary.name)
        info.uid = info.gid = 0
        info.uname = info.gname = "root"
        info.mode = 0o755
        with open(binary, "rb") as f:
            tar.addfile(info, f)
    return "sha256:" + w.h.hexdigest()


def write_archive(out: Path, name: str, config: dict, layer: Path) -> None:
    """`docker save` layout: manifest.json, the config, the one layer."""
    cfg = json.dumps(config, sort_keys=True).encode()
    cfg_name = hashlib.sha256(cfg).hexdigest() + ".json"
    manifest = [{"Config": cfg_name, "RepoTags": [name], "Layers": ["layer.tar"]}]
    tmp = out.with_suffix(".tmp")
    with tarfile.open(tmp, "w") as tar:
        for arc, data in (("manifest.json", json.dumps(manifest).encode()), (cfg_name, cfg)):
            info = tarfile.TarInfo(arc)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        tar.add(layer, arcname="layer.tar")
    os.replace(tmp, out)


def pack(out: Path, name: str, c: Contract, make_layer, extra_env: dict[str, str]) -> dict:
    layer = out.with_suffix(".layer")
    with open(layer, "wb") as f:
        diff_id = make_layer(f)
    config = image_config(c, diff_id, extra_env)
    try:
        write_archive(out, name, config, layer)
    finally:
        layer.unlink()
    return config


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="k8s_image.py", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="what", required=True)
    a = sub.add_parser("contract", help="print the Dockerfile's runtime contract as JSON")
    a.add_argument("dockerfile", type=Path)
    r = sub.add_parser("rootfs", help="pack a root filesystem with the Dockerfile's contract")
    r.add_argument("--dockerfile", type=Path, required=True)
    r.add_argument("--rootfs", type=Path, required=True)
    r.add_argument("--name", required=True)
    r.add_argument("--out", type=Path, required=True)
    r.add_argument("--env", action="append", default=[], help="KEY=VALUE added to the image's Env")
    b = sub.add_parser("binary", help="a one-binary image (the pause image)")
    b.add_argument("--binary", type=Path, required=True)
    b.add_argument("--name", required=True)
    b.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    try:
        if args.what == "contract":
            print(json.dumps(contract(args.dockerfile).__dict__, indent=1))
        elif args.what == "rootfs":
            extra = dict(kv.split("=", 1) for kv in args.env)
            pack(args.out, args.name, contract(args.dockerfile),
                 lambda f: _layer_from_dir(args.rootfs, f), extra)
        else:
            c = Contract(entrypoint=[f"/{args.binary.name}"], user="65535:65535")
            pack(args.out, args.name, c, lambda f: _layer_from_binary(args.binary, f), {})
    except (OSError, ValueError) as e:
        print(f"k8s_image.py: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
