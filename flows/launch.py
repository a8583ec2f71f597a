"""`python -m flows.launch [bytewax.run options]`: the pods' command.

Bytewax's launcher (`python -m bytewax.run flows.sessions:flow`) takes its
snapshot and backup intervals as `BYTEWAX_*` whole seconds, while every other
setting is a `PROTOSESSIONS_*` duration like `10s`. So a ConfigMap spells the
intervals as protosessions does (`PROTOSESSIONS_SNAPSHOT_INTERVAL`,
`PROTOSESSIONS_BACKUP_INTERVAL`, with the defaults of `protosessions run`),
and this module hands them to Bytewax in its spelling before running its
launcher on the flow. Setting both spellings differently is refused.

In a pod of a cluster (`BYTEWAX_HOSTFILE_PATH` set) the launcher runs under
`flows.supervisor`, which re-forms the cluster when a peer goes away instead
of letting the pod crash (set `PROTOSESSIONS_SUPERVISED=1` to run it bare).
"""

from __future__ import annotations

import os
import runpy
import sys
from typing import Mapping, Sequence

from . import supervisor
from .options import BY_DEST, duration_us

# (our option, the variable bytewax.run reads in whole seconds)
INTERVALS = (("snapshot_interval", "BYTEWAX_SNAPSHOT_INTERVAL"),
             ("backup_interval", "BYTEWAX_RECOVERY_BACKUP_INTERVAL"))


def bytewax_env(environ: Mapping[str, str]) -> dict[str, str]:
    """The `BYTEWAX_*` intervals for `environ` (ValueError, one line, when
    they cannot be said in Bytewax's spelling or contradict it)."""
    out: dict[str, str] = {}
    for dest, theirs in INTERVALS:
        option = BY_DEST[dest]
        text = environ.get(option.env)
        if text is None and theirs in environ:  # only Bytewax's spelling: leave it
            continue
        us = duration_us(option, text if text is not None else option.default)
        if us % 1_000_000:
            raise ValueError(f"{option.env}={text}: Bytewax takes whole seconds")
        seconds = str(us // 1_000_000)
        if theirs in environ and environ[theirs].strip() != seconds:
            raise ValueError(f"{option.env}={text} and {theirs}={environ[theirs]} disagree: "
                             f"set only {option.env}")
        out[theirs] = seconds
    return out


def main(argv: Sequence[str] | None = None) -> None:
    try:
        os.environ.update(bytewax_env(os.environ))
    except ValueError as e:
        print(f"flows.launch: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    args = list(sys.argv[1:] if argv is None else argv)
    hostfile = os.environ.get("BYTEWAX_HOSTFILE_PATH")
    if hostfile and os.environ.get(supervisor.SUPERVISED) != "1":
        raise SystemExit(supervisor.main(args, hostfile))
    sys.argv = ["bytewax.run", "flows.sessions:flow", *args]
    runpy.run_module("bytewax.run", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
