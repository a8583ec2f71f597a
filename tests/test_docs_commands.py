"""Every command the pages show is run, so the pages cannot drift from the code.

The fenced shell blocks (```bash) of README.md, docs/*.md and k8s/README.md
are read in order, page by page, and each command in them is handled by what
it is:

- `protosessions ...`, `python -m bytewax.run ...`, `python -m flows.launch`:
  run for real, in a scratch directory, against the test broker for Kafka
  (its address for `127.0.0.1:9092`, page-own topic names, smaller `--hits`
  and `--duration`); a live `run` on Kafka must come up and print progress,
  then stop cleanly on SIGINT (exit 130); a command ending in `&` runs in the
  background and must exit 0 by the end of its page;
- `python bench/...`: a benchmark takes minutes, so its options are parsed by
  its own parser (the script stops right after `parse_args`);
- `kubectl`, `docker`: need a cluster or a daemon, so they are checked by
  syntax: a known verb, every file or directory they name exists (`kubectl
  kustomize` renders what `apply -k` would apply), and the `protosessions`
  command a pod would run parses;
- the set-up commands (venv, pip, the local broker, the test script itself)
  are checked for what they rely on, as this test runs inside them;
- anything else fails the test until it is taught here.

A command that fails fails its page's test, naming the page, the line and
what the command printed. The quick start of README.md is run, and its
sessions checked, by tests/test_quickstart.py.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = ["README.md", *sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "docs").glob("*.md")),
         "k8s/README.md"]
SHELL_FENCES = ("bash", "sh", "shell", "console")
PAGE_BROKER = ("127.0.0.1:9092", "HOST:PORT")
MAX_HITS = 5000  # `--hits` above this is run with this many
LIVE_DURATION = "5s"  # a live generator's `--duration`
TIMEOUT_S = 300
# Sections run by a test of their own: (page, heading it starts with) -> the test.
COVERED = {("README.md", "## Quick start on Kafka"): "tests/test_quickstart.py",
           ("docs/d8a.md", "## Try it on a queue d8a wrote"): "tests/test_d8a_docs.py"}
# Sections whose commands need a real cluster (root, a network namespace,
# minutes to build): checked by syntax only; scripts/k8s-e2e.sh runs the like.
CLUSTER_SECTIONS = {("k8s/README.md", "## Try it on a local one-node cluster")}
KUBECTL_VERBS = {"apply", "create", "label", "wait", "logs", "run", "scale", "rollout", "delete",
                 "get", "describe"}


@dataclass
class Command:
    page: str
    line: int
    text: str  # as the page writes it, continuation lines joined
    section: str


def shell_blocks(text: str) -> list[tuple[str, int, str, str]]:
    """`(fence language, first line number, body, section heading)` of each fenced block."""
    out = []
    lines = text.splitlines()
    i, heading = 0, ""
    while i < len(lines):
        line = lines[i]
        if line.startswith("#") and not line.startswith("#!"):
            heading = line.strip()
        m = re.match(r"^( *)```(\S*)\s*$", line)  # indented too: a block in a list item
        if m:
            indent, start = len(m.group(1)), i + 1
            j = start
            while j < len(lines) and not lines[j].strip().startswith("```"):
                j += 1
            assert j < len(lines), f"line {i + 1}: a fenced block is not closed"
            body = "\n".join(b[indent:] if b[:indent].strip() == "" else b for b in lines[start:j])
            out.append((m.group(2), start + 1, body, heading))
            i = j
        i += 1
    return out


def page_commands(page: str, text: str) -> list[Command]:
    """The commands of a page's shell blocks; a command-like line in a
    block of another kind is an error (it would not be run)."""
    commands = []
    for lang, first, body, heading in shell_blocks(text):
        if lang not in SHELL_FENCES:
            for n, line in enumerate(body.splitlines()):
                assert not re.match(r"^(\$ |protosessions |python3? |kubectl |docker |bash )", line), (
                    f"{page}:{first + n}: a command outside a ```bash block: {line!r}")
            continue
        pending, start = "", first
        for n, line in enumerate(body.splitlines()):
            if not pending:
                start = first + n
            if line.rstrip().endswith("\\"):
                pending += line.rstrip()[:-1] + " "
                continue
            full = pending + line
            try:
                shlex.split(full, comments=True)
            except ValueError:  # a quote still open: the command goes on
                pending = full + "\n"
                continue
            pending = ""
            if full.strip() and not full.strip().startswith("#"):
                commands.append(Command(page, start, full.strip(), heading))
        assert not pending, f"{page}:{start}: a continued line or an open quote ends the block"
    return commands


@dataclass
class Page:
    """What the commands of one page share: a scratch directory, topic
    names, the test broker (or None), background processes."""

    name: str
    work: Path
    broker: str | None
    tag: str = field(default_factory=lambda: f"docs-{uuid.uuid4().hex[:8]}")
    background: list[tuple[Command, subprocess.Popen, Path]] = field(default_factory=list)
    kafka_skipped: int = 0
    ran: int = 0

    def env(self, extra: dict[str, str]) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PROTOSESSIONS_")
               or k == "PROTOSESSIONS_TEST_KAFKA"}
        env.update({"PROTOSESSIONS_HITS_TOPIC": f"{self.tag}.hits",
                    "PROTOSESSIONS_SESSIONS_TOPIC": f"{self.tag}.sessions",
                    "PROTOSESSIONS_DEAD_LETTER_TOPIC": f"{self.tag}.hits.dead",
                    "BYTEWAX_DATAFLOW_API_CACHE_PATH": str(self.work),
                    "PYTHONPATH": str(ROOT)})
        env.update({k: self.localise_word(v) for k, v in extra.items()})
        return env

    def localise_word(self, word: str) -> str:
        if self.broker:
            for b in PAGE_BROKER:
                word = word.replace(b, self.broker)
        if word.startswith("/tmp/"):  # the page's scratch files stay in the scratch directory
            word = str(self.work / word[len("/tmp/"):])
        return word


def fail(cmd: Command, why: str, output: str = "") -> None:
    tail = "\n".join(output.strip().splitlines()[-15:])
    pytest.fail(f"{cmd.page}:{cmd.line}: {cmd.text}\n  {why}" + (f"\n{tail}" if tail else ""),
                pytrace=False)


def split_env(words: list[str]) -> tuple[dict[str, str], list[str]]:
    env = {}
    while words and re.match(r"^[A-Z_][A-Z0-9_]*=", words[0]):
        k, _, v = words.pop(0).partition("=")
        env[k] = v
    return env, words


def protosessions_argv() -> list[str]:
    script = Path(sys.executable).with_name("protosessions")
    return [str(script)] if script.exists() else [sys.executable, "-m", "flows.cli"]


def needs_kafka(env: dict[str, str], argv: list[str]) -> bool:
    return ("--kafka-brokers" in argv or "PROTOSESSIONS_KAFKA_BROKERS" in env
            or argv[:2] == ["protosessions", "topics"])


def localise_args(page: Page, argv: list[str]) -> list[str]:
    out = [page.localise_word(a) for a in argv]
    for i, a in enumerate(out[:-1]):
        nxt = out[i + 1]
        if a == "--hits" and nxt.isdigit() and int(nxt) > MAX_HITS:
            out[i + 1] = str(MAX_HITS)
        elif a == "--duration":
            out[i + 1] = LIVE_DURATION
        elif a in ("--hits-topic", "--sessions-topic", "--dead-letter-topic"):
            out[i + 1] = f"{page.tag}.{nxt}"
    return out


def is_live_run(argv: list[str], env: dict[str, str]) -> bool:
    """A run that never ends by itself: Kafka without `--until-end`."""
    kafka = "--kafka-brokers" in argv or "PROTOSESSIONS_KAFKA_BROKERS" in env
    return kafka and "--until-end" not in argv and (
        argv[:2] == ["protosessions", "run"] or "flows.sessions:flow" in argv
        or argv[:3] == ["python", "-m", "flows.launch"])


def run_program(page: Page, cmd: Command, env: dict[str, str], argv: list[str],
                background: bool) -> None:
    """Run a command of the project: to its end (exit 0), in the background,
    or, live on Kafka, until it prints progress and then stop it."""
    if needs_kafka(env, argv) and not page.broker:
        page.kafka_skipped += 1
        return
    real = localise_args(page, argv)
    if real[0] in ("protosessions", ".venv/bin/protosessions"):
        real = protosessions_argv() + real[1:]
    elif real[0] in ("python", "python3"):
        real = [sys.executable, *real[1:]]
    full_env = page.env(env)
    err = page.work / f"stderr-{cmd.line}.txt"
    page.ran += 1
    if background:
        with open(err, "w") as e:
            proc = subprocess.Popen(real, cwd=page.work, env=full_env, stdout=subprocess.DEVNULL,
                                    stderr=e)
        page.background.append((cmd, proc, err))
        return
    if is_live_run(argv, env):
        with open(err, "w") as e:
            proc = subprocess.Popen(real, cwd=page.work, env=full_env, stdout=subprocess.DEVNULL,
                                    stderr=e)
        try:
            started = time.monotonic()
            while "open proto-sessions" not in err.read_text():
                if proc.poll() is not None:
                    fail(cmd, f"a live run exited {proc.returncode} before printing progress",
                         err.read_text())
                if time.monotonic() - started > TIMEOUT_S:
                    fail(cmd, "a live run printed no progress line", err.read_text())
                time.sleep(0.5)
            proc.send_signal(signal.SIGINT)
            rc = proc.wait(60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        if rc != 130 or "stopped by SIGINT" not in err.read_text():
            fail(cmd, f"a live run stopped by SIGINT exited {rc}", err.read_text())
        return
    try:
        proc = subprocess.run(real, cwd=page.work, env=full_env, capture_output=True, text=True,
                              timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        fail(cmd, f"did not end within {TIMEOUT_S} s")
    if proc.returncode != 0:
        fail(cmd, f"exited {proc.returncode}", proc.stderr)


PARSE_ONLY = r"""
import argparse, os, runpy, sys
parse_args = argparse.ArgumentParser.parse_args
def parsed(self, *a, **k):
    parse_args(self, *a, **k)  # exits 2 on an option the script does not take
    sys.stdout.write("options parsed\n"); sys.stdout.flush()
    os._exit(0)
argparse.ArgumentParser.parse_args = parsed
script = sys.argv[1]
sys.argv = sys.argv[1:]
sys.path.insert(0, os.path.dirname(os.path.abspath(script)))
runpy.run_path(script, run_name="__main__")
sys.stdout.write("the script never parsed its options\n")
os._exit(3)
"""


def check_bench(page: Page, cmd: Command, argv: list[str]) -> None:
    script = ROOT / argv[1]
    if not script.is_file():
        fail(cmd, f"{argv[1]} does not exist")
    page.ran += 1
    proc = subprocess.run([sys.executable, "-c", PARSE_ONLY, str(script), *argv[2:]], cwd=ROOT,
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    if proc.returncode != 0 or "options parsed" not in proc.stdout:
        fail(cmd, f"the benchmark's options do not parse (exit {proc.returncode})",
             proc.stdout + proc.stderr)


def check_pod_command(cmd: Command, argv: list[str]) -> None:
    """What a pod would run after `--`: a `protosessions` command that parses."""
    from flows.cli import build_parser
    from flows.usage import UsageError

    if not argv or argv[0] != "protosessions":
        fail(cmd, f"the pod runs {argv[:1]}: teach this test")
    try:
        build_parser().parse_args(argv[1:])
    except UsageError as e:
        fail(cmd, f"the pod's command does not parse: {e}")


def check_kubectl(page: Page, cmd: Command, argv: list[str]) -> None:
    words = argv[1:]
    pod: list[str] = []
    if "--" in words:
        pod = words[words.index("--") + 1:]
        words = words[:words.index("--")]
    verbs = [w for w in words if not w.startswith("-") and w in KUBECTL_VERBS]
    if not verbs:
        fail(cmd, "no kubectl verb this test knows")
    takes_files = verbs[0] in ("apply", "create", "delete")  # `logs -f` follows
    for i, w in enumerate(words):
        value = None
        if takes_files and w in ("-f", "-k", "--filename", "--kustomize") and i + 1 < len(words):
            value = words[i + 1]
        if value is not None and not (ROOT / value).exists():
            fail(cmd, f"{value} does not exist")
        if w == "-k" and value is not None and shutil.which("kubectl"):
            proc = subprocess.run(["kubectl", "kustomize", str(ROOT / value)], capture_output=True,
                                  text=True, timeout=120)
            if proc.returncode != 0:
                fail(cmd, "kubectl kustomize does not render it", proc.stderr)
        if w.startswith("--from-file="):
            path = w.split("=")[-1]
            if not (page.work / path).exists():
                fail(cmd, f"{path} is not there: the page creates it before, in the same directory")
    if verbs[0] == "run" and pod:
        check_pod_command(cmd, pod)
    for w in words:
        if w.startswith("--overrides="):
            try:
                json.loads(w.partition("=")[2])
            except ValueError as e:
                fail(cmd, f"--overrides is not JSON: {e}")
    page.ran += 1


def check_docker(page: Page, cmd: Command, argv: list[str]) -> None:
    if argv[1] == "build":
        context = argv[-1]
        if not (ROOT / context / "Dockerfile").is_file():
            fail(cmd, f"no Dockerfile in {context}")
    elif argv[1] != "push":
        fail(cmd, f"docker {argv[1]}: teach this test")
    page.ran += 1


def check_setup(page: Page, cmd: Command, argv: list[str]) -> bool:
    """The commands this test already runs inside; True when `argv` is one."""
    if argv[:3] == ["python3", "-m", "venv"]:
        assert sys.prefix != sys.base_prefix, "the tests run outside a virtual environment"
    elif argv[0].endswith("pip") and argv[1] == "install":
        extras = re.findall(r"\[(\w+)\]", " ".join(argv))
        text = (ROOT / "pyproject.toml").read_text()
        for extra in extras:
            if not re.search(rf"^{extra} = \[", text, re.M):
                fail(cmd, f"pyproject.toml has no extra {extra!r}")
    elif argv[:2] == [".", ".venv/bin/activate"]:
        pass  # this test runs in the project's environment already
    elif argv[0] == "bash" and argv[1] == "scripts/test.sh":
        proc = subprocess.run(["bash", "-n", str(ROOT / argv[1])], capture_output=True, text=True)
        if proc.returncode != 0:
            fail(cmd, "scripts/test.sh does not parse", proc.stderr)
    elif argv[0] == "bash" and argv[1] == "scripts/kafka.sh":
        script = (ROOT / argv[1]).read_text()
        if len(argv) < 3 or not re.search(rf"^\s+{re.escape(argv[2])}\)", script, re.M):
            fail(cmd, f"scripts/kafka.sh has no command {argv[2:3]}")
    else:
        return False
    page.ran += 1
    return True


def script_commands(script: str) -> set[str]:
    """The subcommands a script's `case` takes (`  up) ...`)."""
    return set(re.findall(r"^\s+([a-z][a-z-]*)\)", (ROOT / script).read_text(), re.M))


def check_syntax(page: Page, cmd: Command, argv: list[str]) -> None:
    """A command for a real cluster's machine: not run, but every script,
    subcommand, flag and file it names must be there."""
    _, argv = split_env(list(argv))
    if argv[0] == "eval" and len(argv) == 2 and re.fullmatch(r"\$\((.*)\)", argv[1]):
        return check_syntax(page, cmd, shlex.split(argv[1][2:-1]))
    if argv[0] in ("protosessions", ".venv/bin/protosessions"):
        return check_pod_command(cmd, ["protosessions", *argv[1:]])
    if argv[0] == "kubectl":
        return check_kubectl(page, cmd, argv)
    if argv[0] == "install" and shutil.which("install"):
        page.ran += 1
        return None
    if argv[0] == "bash" and len(argv) >= 2 and argv[1].startswith("scripts/"):
        if check_setup(page, cmd, argv):
            return None
        script = ROOT / argv[1]
        if not script.is_file():
            fail(cmd, f"{argv[1]} does not exist")
        proc = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
        if proc.returncode != 0:
            fail(cmd, f"{argv[1]} does not parse", proc.stderr)
        subs = script_commands(argv[1])
        if subs and (len(argv) < 3 or argv[2] not in subs):
            fail(cmd, f"{argv[1]} has no command {argv[2:3]} (it has {sorted(subs)})")
        page.ran += 1
        if argv[1] == "scripts/k8s.sh" and argv[2] == "exec":
            return check_syntax(page, cmd, argv[3:])
        return None
    fail(cmd, f"{argv[0]}: a command this test does not know; teach it")
    return None


def run_shell(page: Page, cmd: Command, text: str) -> None:
    """File commands (`printf ... > file`, `rm file`), run by bash in the scratch directory."""
    page.ran += 1
    proc = subprocess.run(["bash", "-euo", "pipefail", "-c", text], cwd=page.work,
                          capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        fail(cmd, f"exited {proc.returncode}", proc.stderr)


def and_parts(words: list[str]) -> list[list[str]]:
    """`a && b` -> `[a, b]`."""
    parts: list[list[str]] = [[]]
    for w in words:
        if w == "&&":
            parts.append([])
        else:
            parts[-1].append(w)
    return parts


def run_command(page: Page, cmd: Command) -> None:
    """One command of a page (several when joined by `&&`)."""
    words = shlex.split(cmd.text, comments=True)
    background = bool(words) and words[-1] == "&"
    if background:
        words = words[:-1]
    parts = and_parts(words)
    for i, part in enumerate(parts):
        env, argv = split_env(list(part))
        if not argv:
            fail(cmd, "an empty command")
        last = i == len(parts) - 1
        if check_setup(page, cmd, argv):
            continue
        if argv[0] in ("protosessions", ".venv/bin/protosessions") or (
                argv[0] in ("python", "python3") and argv[1:2] == ["-m"]
                and argv[2] in ("bytewax.run", "flows.launch")):
            run_program(page, cmd, env, argv, background and last)
        elif argv[0] in ("python", "python3") and argv[1].startswith("bench/"):
            check_bench(page, cmd, argv)
        elif argv[0] == "kubectl":
            check_kubectl(page, cmd, argv)
        elif argv[0] == "docker":
            check_docker(page, cmd, argv)
        elif argv[0] in ("printf", "rm") and len(parts) == 1 and not background:
            run_shell(page, cmd, cmd.text)
        else:
            fail(cmd, f"{argv[0]}: a command this test does not know; teach it")


def run_page(name: str, text: str, work: Path, broker: str | None) -> Page:
    page = Page(name, work, broker)
    try:
        for cmd in page_commands(name, text):
            if any(name == p and cmd.section.startswith(h) for p, h in COVERED):
                continue
            if any(name == p and cmd.section.startswith(h) for p, h in CLUSTER_SECTIONS):
                for part in and_parts(shlex.split(cmd.text, comments=True)):
                    check_syntax(page, cmd, part)
                continue
            run_command(page, cmd)
        for cmd, proc, err in page.background:
            try:
                rc = proc.wait(TIMEOUT_S)
            except subprocess.TimeoutExpired:
                fail(cmd, f"a background command did not end within {TIMEOUT_S} s")
            if rc != 0:
                fail(cmd, f"a background command exited {rc}", err.read_text())
    finally:
        for _, proc, _ in page.background:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return page


def test_the_pages_are_the_ones_there_are() -> None:
    assert {"README.md", "docs/semantics.md", "docs/kafka.md", "docs/recovery.md",
            "docs/operations.md", "docs/performance.md", "docs/internals.md",
            "k8s/README.md"} <= set(PAGES)


@pytest.mark.parametrize("name", PAGES)
def test_every_command_of_the_page_runs(name: str, tmp_path: Path) -> None:
    broker = os.environ.get("PROTOSESSIONS_TEST_KAFKA") or None
    page = run_page(name, (ROOT / name).read_text(), tmp_path, broker)
    if page.kafka_skipped:
        from kafka_support import bootstrap
        bootstrap()  # skips here, fails under CI: the page's Kafka commands were not run
    print(f"{name}: {page.ran} commands run or checked")


def test_the_sections_left_out_are_run_by_their_own_tests() -> None:
    """Each section left out here has its test, which reads the same heading."""
    checked = 0
    for (page, heading), test in COVERED.items():
        assert any(line.startswith(heading) for line in (ROOT / page).read_text().splitlines())
        source = (ROOT / test).read_text()
        assert f'HEADING = "{heading}"' in source, f"{test} does not read {heading!r}"
        checked += 1
    assert checked >= 1


# --- the runner itself: a page whose command fails must fail -------------------

def fake_page(tmp_path: Path, body: str, lang: str = "bash") -> None:
    run_page("fake.md", f"# Fake\n\n```{lang}\n{body}\n```\n", tmp_path, None)


@pytest.mark.parametrize("body, message", [
    ("protosessions run --no-such-flag", "exited 2"),
    ("protosessions generate --hits 10 --output out.jsonl\nprotosessions run --input missing.jsonl",
     "exited 2"),
    ("curl http://localhost:3030/metrics", "does not know"),
    ("python bench/throughput.py --no-such-option", "do not parse"),
    ("python bench/no_such_bench.py", "does not exist"),
    ("kubectl apply -k k8s-missing/", "does not exist"),
    ("kubectl -n x run p --image=i -- protosessions topics create --no-such-flag", "does not parse"),
    ("kubectl -n x create secret generic s --from-file=conf=conf", "is not there"),
    ("bash scripts/kafka.sh restart", "no command"),
    ("protosessions generate --hits 3 --output x.jsonl && protosessions run --input nope.jsonl",
     "exited 2"),
])
def test_a_failing_command_fails_its_page(tmp_path: Path, body: str, message: str) -> None:
    with pytest.raises(pytest.fail.Exception, match=message):
        fake_page(tmp_path, body)


def test_a_command_outside_a_bash_block_fails(tmp_path: Path) -> None:
    with pytest.raises(AssertionError, match="outside a ```bash block"):
        fake_page(tmp_path, "protosessions run --input hits.jsonl", lang="")


def test_output_lines_and_working_commands_pass(tmp_path: Path) -> None:
    run_page("fake.md", "```\nprotosessions: 3 hits read, 1 sessions\n```\n\n```bash\n"
             "protosessions generate --hits 20 --seed 3 \\\n  --output /tmp/h.jsonl   # a comment\n"
             "protosessions run --input /tmp/h.jsonl --output s.jsonl --dead-letter /dev/null\n"
             "```\n", tmp_path, None)
    assert len((tmp_path / "h.jsonl").read_text().splitlines()) == 20  # /tmp/ mapped to scratch
    assert (tmp_path / "s.jsonl").read_text()


# --- links between the pages ---------------------------------------------------

def anchors(markdown: str) -> set[str]:
    """GitHub's anchors for a page's headings (outside fenced blocks)."""
    out, fenced = set(), False
    for line in markdown.splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and re.match(r"^#{1,6} ", line):
            title = line.lstrip("#").strip().lower()
            out.add(re.sub(r"[^\w\- ]", "", title).replace(" ", "-"))
    return out


def broken_links(page: Path) -> list[str]:
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
        if re.match(r"^[a-z]+:", target):
            continue  # a web address
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            broken.append(f"{target}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest.read_text()):
            broken.append(f"{target}: no such heading")
    return broken


@pytest.mark.parametrize("name", PAGES)
def test_every_link_of_the_page_leads_somewhere(name: str) -> None:
    page = ROOT / name
    broken = broken_links(page)
    assert broken == [], f"{name}: {broken}"


def test_the_link_check_finds_a_broken_link(tmp_path: Path) -> None:
    (tmp_path / "a.md").write_text("# A\n\n## Some Heading, here\n\n[b](b.md) [self](#some-heading-here)\n"
                                   "[gone](#nothing) [web](https://example.com/x)\n")
    assert broken_links(tmp_path / "a.md") == ["b.md: no such file", "#nothing: no such heading"]


@pytest.mark.parametrize("body, message", [
    ("bash scripts/k8s.sh exec kubectl apply -k nowhere/", "does not exist"),
    ("bash scripts/k8s.sh launch", "has no command"),
    ("bash scripts/k8s.sh exec .venv/bin/protosessions generate --no-such-flag", "does not parse"),
    ("bash scripts/no-such.sh", "does not exist"),
    ("...", "does not know"),
])
def test_a_cluster_section_is_checked_by_syntax(tmp_path: Path, body: str, message: str) -> None:
    text = f"## Try it on a local one-node cluster\n\n```bash\n{body}\n```\n"
    with pytest.raises(pytest.fail.Exception, match=message):
        run_page("k8s/README.md", text, tmp_path, None)


def test_indented_blocks_and_quotes_over_lines_are_read(tmp_path: Path) -> None:
    text = ("- a list item:\n\n  ```bash\n  kubectl -n x run p --image=i --overrides='{\"a\":\n"
            "    [1]}'\n  protosessions run --no-such-flag\n  ```\n")
    commands = page_commands("fake.md", text)
    assert [c.line for c in commands] == [4, 6]
    assert commands[0].text.endswith("[1]}'")
    with pytest.raises(pytest.fail.Exception, match="exited 2"):
        run_page("fake.md", text, tmp_path, None)


@pytest.mark.kafka
def test_a_live_run_on_kafka_comes_up_and_stops_on_sigint(tmp_path: Path) -> None:
    """The branch for a run that never ends by itself (no page outside the
    quick start shows one today): it must print progress and exit 130."""
    from kafka_support import bootstrap

    text = ("```bash\nprotosessions topics create --kafka-brokers 127.0.0.1:9092 --partitions 1\n"
            "protosessions run --kafka-brokers 127.0.0.1:9092 --session-duration 10s\n```\n")
    page = run_page("fake.md", text, tmp_path, bootstrap())
    assert page.ran == 2 and page.kafka_skipped == 0
    assert "stopped by SIGINT" in next(tmp_path.glob("stderr-*.txt")).read_text()
