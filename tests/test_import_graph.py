"""No module of `flows/` or `protosessions/` imports itself through others,
and each imports on its own.

An import circle works only while the imports stay inside functions and run
late; the day one moves to the top, a module imports half-initialised. The
command line (`flows.cli`) sits on top: nothing of the flow imports it. The
graph is read from the source (every import, inside functions too), not from
what one run happened to import.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("flows", "protosessions")


def module_names(root: Path, package: str) -> dict[str, Path]:
    """`{dotted module name: file}` for every module of `package` under `root`."""
    names: dict[str, Path] = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        names[".".join(parts)] = path
    return names


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The modules of `known` that module `name` imports, wherever in it."""
    is_package = path.name == "__init__.py"
    package = name if is_package else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name in known)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                if sub in known:  # `from . import stop`: the submodule
                    found.add(sub)
                elif target in known:  # `from .usage import UsageError`
                    found.add(target)
    found.discard(name)
    return found


def import_graph(root: Path, packages: tuple[str, ...]) -> dict[str, set[str]]:
    files: dict[str, Path] = {}
    for package in packages:
        files.update(module_names(root, package))
    known = set(files)
    return {name: imports_of(name, path, known) for name, path in files.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Each circle found, as the path `a -> b -> ... -> a` (one per back edge)."""
    found: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                found.append(path[path.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt)
        path.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    return found


def test_no_import_circle_in_flows_or_the_library() -> None:
    graph = import_graph(ROOT, PACKAGES)
    assert len(graph) > 30 and "flows.cli" in graph  # the packages were read
    found = cycles(graph)
    assert not found, "import circles: " + "; ".join(" -> ".join(c) for c in found)


def test_nothing_of_the_flow_imports_the_command_line() -> None:
    graph = import_graph(ROOT, PACKAGES)
    importers = sorted(name for name, deps in graph.items() if "flows.cli" in deps)
    assert importers == []


def test_the_check_finds_a_circle(tmp_path: Path) -> None:
    """The detector itself: relative, absolute and function-level imports count."""
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from .b import thing\n")
    (pkg / "b.py").write_text("def f():\n    from pkg.sub import c\n")
    (pkg / "sub" / "c.py").write_text("from .. import a\n")
    (pkg / "d.py").write_text("import pkg.a\n")
    graph = import_graph(tmp_path, ("pkg",))
    assert graph["pkg.a"] == {"pkg.b"} and graph["pkg.b"] == {"pkg.sub.c"}
    assert graph["pkg.sub.c"] == {"pkg.a"} and graph["pkg.d"] == {"pkg.a"}
    assert cycles(graph) == [["pkg.a", "pkg.b", "pkg.sub.c", "pkg.a"]]
    (pkg / "sub" / "c.py").write_text("import json\nfrom .. import sub\n")
    assert cycles(import_graph(tmp_path, ("pkg",))) == []


FLOWS_MODULES = sorted(n for n in module_names(ROOT, "flows") if n != "flows")


@pytest.mark.parametrize("module", FLOWS_MODULES)
def test_each_flows_module_imports_on_its_own(module: str) -> None:
    """`python -c "import flows.X"` in a fresh interpreter: no module needs
    another to have been imported first."""
    proc = subprocess.run([sys.executable, "-c", f"import {module}"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
