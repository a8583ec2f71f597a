"""The domain library (`protosessions/`) knows no engine: it imports neither
Bytewax, nor a Kafka client, nor anything of `flows/` (which runs it)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

LIBRARY = Path(__file__).resolve().parent.parent / "protosessions"

BLOCK_AND_IMPORT_ALL = """
import importlib, importlib.abc, pkgutil, sys

class Refuse(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in ("bytewax", "confluent_kafka", "flows"):
            raise ImportError(f"{name} is not importable here")
        return None

sys.meta_path.insert(0, Refuse())
import protosessions
names = [m.name for m in pkgutil.walk_packages(protosessions.__path__, "protosessions.")]
for name in names:
    importlib.import_module(name)
print(len(names))
"""


def test_the_library_imports_without_bytewax_or_kafka() -> None:
    proc = subprocess.run([sys.executable, "-c", BLOCK_AND_IMPORT_ALL], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert int(proc.stdout) >= 15  # every module was imported, not just the package


def test_no_library_module_imports_flows() -> None:
    for path in LIBRARY.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                assert top not in ("flows", "bytewax", "confluent_kafka"), f"{path} imports {name}"
