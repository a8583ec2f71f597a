"""`protosessions d8a-bridge`: d8a's filesystem queue to the hits topic.

The queue files themselves (`flows.d8a_queue`) and the bridge's keep-or-delete
rule with a stand-in producer need no broker; the fixture's queue through the
bridge, the real broker and the job (`--until-end`), killed and restarted
on the way, does (`PROTOSESSIONS_TEST_KAFKA`)."""

from __future__ import annotations

import gzip
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import orjson
import pytest

from d8a_support import D8A_FLAGS, HITS, QUEUE, d8a_sessions, grouping
from flows.d8a_bridge import Bridge, BridgeError, client_key
from flows.d8a_queue import REJECTED, BadTask, read_task, task_names

ROOT = Path(__file__).resolve().parents[1]
HIT_LINES = HITS.read_bytes().splitlines()


def task_bytes(body: bytes, headers: bytes = b'{"task_id":"t"}', kind: bytes = b"process-hits",
               gzipped: bool = True) -> bytes:
    body = gzip.compress(body) if gzipped else body
    return bytes([len(kind)]) + kind + len(headers).to_bytes(2, "big") + headers + body


GOOD = task_bytes(b'{"Hits":[' + HIT_LINES[0] + b"," + HIT_LINES[1] + b"]}")
BAD_FILES = {
    "empty": b"",
    "truncated type": b"\x0cproc",
    "not gzip": task_bytes(b'{"Hits":[]}', gzipped=False),
    "truncated gzip": GOOD[:-9],
    "header past the end": GOOD[:13] + b"\xff\xff" + GOOD[15:40],
    "headers not JSON": task_bytes(b'{"Hits":[]}', headers=b"{nope"),
    "not Hits": task_bytes(b'{"hits":[]}'),
    "Hits not a list": task_bytes(b'{"Hits":{}}'),
    "a list": task_bytes(b"[]"),
    "not JSON": task_bytes(b"\xff{"),
    "another type": task_bytes(b'{"Hits":[]}', kind=b"other"),
    "gzip then junk": GOOD + b"junk",
}


# --- the queue's files ---------------------------------------------------------------------------

def test_the_fixture_queue_decodes_to_the_published_hits_byte_for_byte() -> None:
    hits, pings = [], 0
    for name in task_names(QUEUE):
        task = read_task((QUEUE / name).read_bytes())
        pings += task.ping
        hits += task.hits
    assert (pings, len(hits)) == (454, 534)
    assert hits == HIT_LINES  # as d8a wrote them: Go's escapes kept


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_a_file_that_is_no_task_says_why_in_one_line(name: str) -> None:
    with pytest.raises(BadTask) as e:
        read_task(BAD_FILES[name])
    assert "\n" not in str(e.value) and str(e.value)


def test_task_details() -> None:
    assert read_task(GOOD).hits == HIT_LINES[:2]
    two = gzip.compress(b'{"Hits":[') + gzip.compress(b'1, {"a" : "]"} ]}')  # two gzip members
    assert read_task(task_bytes(two, gzipped=False)).hits == [b"1", b'{"a" : "]"}']
    assert read_task(task_bytes(b'{"Hits":[{"x":1}],"Hits":[ ]}')).hits == []  # the last wins
    ping = task_bytes(b"", headers=b'{"is-ping":"true"}')
    assert read_task(ping).ping  # a ping's body is not read


def test_task_names_in_name_order_only_task_files(tmp_path: Path) -> None:
    for name in ("3.task", "1.task", "2.tmp", "10.task"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "4.task").mkdir()
    assert task_names(tmp_path) == ["1.task", "10.task", "3.task"]


def test_client_key() -> None:
    assert client_key(HIT_LINES[0]) == orjson.loads(HIT_LINES[0])["ClientID"].encode()
    assert client_key(b"[1]") is None and client_key(b'{"ClientID":5}') is None
    assert client_key(b"{") is None and client_key(b'{"ClientID":""}') is None


# --- the bridge with a stand-in producer ---------------------------------------------------------

class FakeProducer:
    """Acknowledges what it is given on the next flush, unless told to fail."""

    def __init__(self, fail_on: bytes | None = None) -> None:
        self.sent: list[tuple[bytes | None, bytes]] = []
        self.pending: list = []
        self.fail_on = fail_on

    def produce(self, topic, value, key, on_delivery) -> None:
        self.pending.append((key, value, on_delivery))

    def poll(self, _t: float) -> None:
        pass

    def flush(self, _t: float) -> int:
        for key, value, cb in self.pending:
            if self.fail_on is not None and self.fail_on in value:
                cb(RuntimeError("broker said no"), None)
            else:
                self.sent.append((key, value))
                cb(None, None)
        self.pending = []
        return 0

    def __len__(self) -> int:
        return len(self.pending)


def _queue(tmp_path: Path, files: dict[str, bytes]) -> Path:
    q = tmp_path / "queue"
    q.mkdir()
    for name, data in files.items():
        (q / name).write_bytes(data)
    return q


def test_bridge_sends_deletes_and_moves_aside(tmp_path: Path, capsys) -> None:
    files = {f"{i:03d}.task": data for i, data in enumerate(BAD_FILES.values())}
    files["100.task"] = GOOD
    files["101.task"] = task_bytes(b"", headers=b'{"is-ping":"true"}')
    files["102.tmp"] = b"being written"
    q = _queue(tmp_path, files)
    producer = FakeProducer()
    bridge = Bridge(q, producer, "hits", 0.01)
    bridge.run(until_empty=True)
    assert producer.sent == [(client_key(h), h) for h in HIT_LINES[:2]]
    assert sorted(os.listdir(q)) == ["102.tmp", REJECTED]
    assert sorted(os.listdir(q / REJECTED)) == sorted(n for n in files if n < "100")
    for name in os.listdir(q / REJECTED):  # moved, never changed
        assert (q / REJECTED / name).read_bytes() == files[name]
    c = bridge.counts
    assert (c.tasks, c.hits, c.pings, c.rejected) == (1, 2, 1, len(BAD_FILES))
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == len(BAD_FILES) and all("is no d8a task" in x for x in lines)


def test_a_task_whose_hit_is_not_acknowledged_is_kept(tmp_path: Path) -> None:
    q = _queue(tmp_path, {"1.task": task_bytes(b'{"Hits":[{"ClientID":"a"}]}'), "2.task": GOOD})
    bridge = Bridge(q, FakeProducer(fail_on=HIT_LINES[1][:20]), "hits", 0.01)
    with pytest.raises(BridgeError, match="not acknowledged"):
        bridge.run(until_empty=True)
    assert task_names(q) == ["2.task"]  # 1 sent and deleted, 2 kept whole for the next start
    assert (q / "2.task").read_bytes() == GOOD


# --- the fixture through the bridge, the broker and the job -------------------------------------

def _cli(*argv: str) -> list[str]:
    return [sys.executable, "-m", "flows.cli", *argv]


@pytest.mark.kafka
def test_fixture_queue_through_bridge_broker_and_job(tmp_path: Path) -> None:
    """The bridge, killed twice as it goes and started again, then the job
    on the hits topic: every hit arrives (some twice), keyed by ClientID, and
    the sessions are d8a's 26, hit for hit."""
    from kafka_support import bootstrap, consume_all, topics

    broker = bootstrap()
    names = topics(broker, partitions=3, prefix="d8a")
    q = tmp_path / "queue"
    shutil.copytree(QUEUE, q)
    for name, data in list(BAD_FILES.items())[:3]:
        (q / f"0-{name.replace(' ', '-')}.task").write_bytes(data)  # first in name order
    bridge = _cli("d8a-bridge", "--queue", str(q), "--kafka-brokers", broker,
                  "--hits-topic", names["hits"], "--poll-interval", "50ms")
    total = len(task_names(q))
    for left in (total * 2 // 3, total // 3):  # kill on progress, not on the clock
        proc = subprocess.Popen(bridge, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while len(task_names(q)) > left and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.002)
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        assert len(task_names(q)) <= left
    done = subprocess.run([*bridge, "--until-empty"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert task_names(q) == [] and len(os.listdir(q / REJECTED)) == 3
    summary = done.stderr.strip().splitlines()[-1]
    assert summary.startswith("protosessions d8a-bridge: ") and "hits acknowledged" in summary

    messages = consume_all(broker, names["hits"], idle=3.0)
    assert set(m.value() for m in messages) == set(HIT_LINES)  # nothing lost
    resent = len(messages) - len(HIT_LINES)
    assert 0 <= resent <= 2 * max(len(read_task((QUEUE / n).read_bytes()).hits)
                                  for n in task_names(QUEUE))
    for m in messages:
        assert m.key() == orjson.loads(m.value())["ClientID"].encode()

    job = subprocess.run(_cli("run", "--kafka-brokers", broker, "--hits-topic", names["hits"],
                              "--sessions-topic", names["sessions"],
                              "--dead-letter-topic", names["dead"], "--until-end", *D8A_FLAGS),
                         capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert job.returncode == 0, job.stderr
    sessions = [orjson.loads(m.value()) for m in consume_all(broker, names["sessions"], expect=26)]
    assert grouping(sessions) == d8a_sessions() and len(sessions) == 26
    assert f"{resent} duplicates" in job.stderr.strip().splitlines()[-1]
    counted = Counter(orjson.loads(h)["ID"] for h in HIT_LINES)
    assert sum(s["hit_count"] for s in sessions) == sum(counted.values())
