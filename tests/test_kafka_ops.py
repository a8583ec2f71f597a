"""Kafka that is not there, or not as expected: the run (and `topics create`)
fails within `--kafka-timeout` with one line naming the broker, exit code 2;
sessions count once delivered; librdkafka's log goes through Python logging,
rate-limited. On the real broker of scripts/kafka.sh where one is involved."""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import orjson
import pytest

from flows.kafka import DeliveredKafkaSink, DeliveryError
from flows.kafka_admin import RateLimit, rate_limited_kafka_logger
from kafka_support import bootstrap, consume_all, produce, topics
from protosessions import stats
from flows.progress import progress_line
from protosessions.timefmt import format_time_us, wall_now_us
from flows.topics import create_topics

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "BYTEWAX_DATAFLOW_API_CACHE_PATH": tempfile.gettempdir()}
TIMEOUT = 6.0  # --kafka-timeout in these tests: past the first progress line (5 s)
BOUND = TIMEOUT + 15.0  # interpreter start, imports, a slow CI machine


def closed_port() -> str:
    """An address nothing listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"


def cli(*args: str, env: dict | None = None) -> tuple[int, list[str], float]:
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "flows.cli", *args],
                          capture_output=True, text=True, timeout=120, env={**ENV, **(env or {})})
    return proc.returncode, proc.stderr.strip().splitlines(), time.monotonic() - start


def run_args(brokers: str, t: dict[str, str], *extra: str) -> list[str]:
    return ["run", "--kafka-brokers", brokers, "--hits-topic", t["hits"],
            "--sessions-topic", t["sessions"], "--dead-letter-topic", t["dead"],
            "--kafka-timeout", f"{TIMEOUT:g}s", *extra]


NO_TOPICS = {"hits": "h", "sessions": "s", "dead": "d"}


@pytest.mark.parametrize("brokers", [closed_port(), "no-such-host.invalid:9092"])
def test_unreachable_broker_fails_in_bounded_time_with_one_line(brokers: str) -> None:
    rc, err, took = cli(*run_args(brokers, NO_TOPICS))
    assert rc == 2, err
    assert took < BOUND, f"took {took:.1f}s"
    assert len(err) == 1 and brokers in err[0], err


@pytest.mark.kafka
def test_sasl_client_against_a_plaintext_listener_fails_without_the_secret() -> None:
    brokers = bootstrap()
    t = topics(brokers, 1, prefix="sasl")
    rc, err, took = cli(*run_args(brokers, t, "--kafka-config", "security.protocol=SASL_PLAINTEXT",
                                  "--kafka-config", "sasl.mechanism=PLAIN",
                                  "--kafka-config", "sasl.username=u",
                                  "--kafka-config", "sasl.password=hunter2"))
    assert rc == 2, err
    assert took < BOUND, f"took {took:.1f}s"
    assert len(err) == 1 and brokers in err[0] and "hunter2" not in err[0], err


@pytest.mark.kafka
@pytest.mark.parametrize("missing", ["hits", "sessions", "dead"])
def test_missing_topic_fails_at_start_naming_it(missing: str) -> None:
    brokers = bootstrap()
    t = dict(topics(brokers, 1, prefix="miss"))
    t[missing] += ".missing"
    rc, err, took = cli(*run_args(brokers, t, "--until-end"))
    assert rc == 2, err
    assert took < BOUND, f"took {took:.1f}s"
    assert len(err) == 1 and brokers in err[0] and repr(t[missing]) in err[0], err


@pytest.mark.kafka
def test_bytewax_launcher_fails_at_start_too() -> None:
    brokers = bootstrap()
    t = topics(brokers, 1, prefix="launch")
    env = {**ENV, "PROTOSESSIONS_KAFKA_BROKERS": brokers, "PROTOSESSIONS_HITS_TOPIC": t["hits"],
           "PROTOSESSIONS_SESSIONS_TOPIC": t["sessions"] + ".missing",
           "PROTOSESSIONS_DEAD_LETTER_TOPIC": t["dead"],
           "PROTOSESSIONS_KAFKA_TIMEOUT": f"{TIMEOUT:g}s"}
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "bytewax.run", "flows.sessions:flow"], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert time.monotonic() - start < BOUND
    [line] = proc.stderr.strip().splitlines()
    assert brokers in line and repr(t["sessions"] + ".missing") in line


def test_topics_create_against_a_dead_broker_fails_in_bounded_time() -> None:
    brokers = closed_port()
    rc, err, took = cli("topics", "create", "--kafka-brokers", brokers,
                        "--kafka-timeout", f"{TIMEOUT:g}s")
    assert rc == 2, err
    assert took < BOUND, f"took {took:.1f}s"
    assert len(err) == 1 and brokers in err[0] and "KafkaError{" not in err[0], err


@pytest.mark.kafka
def test_sink_counts_sessions_only_once_delivered() -> None:
    """A session the broker refuses (here: larger than the topic allows) is
    not counted as written; delivered ones are."""
    brokers = bootstrap()
    t = topics(brokers, 1, prefix="count")
    small = t["sessions"] + ".small"
    create_topics(brokers, [small], 1, 1, {}, topic_configs={small: {"max.message.bytes": "200"}})
    stats.reset()
    ok = DeliveredKafkaSink(brokers, t["sessions"], {}).build("s", 0, 1)
    ok.write_batch([("a", b"{}"), ("b", b"{}")])
    refused = DeliveredKafkaSink(brokers, small, {}).build("s", 0, 1)
    with pytest.raises(DeliveryError):
        refused.write_batch([("c", os.urandom(5000))])  # lz4 cannot shrink it
    totals = stats.totals()
    assert totals[stats.delivered(t["sessions"])] == 2
    assert totals[stats.delivered(small)] == 0
    assert len(consume_all(brokers, t["sessions"], expect=2, timeout=30)) == 2
    totals["closed:inactivity"] = 3  # closed, but only 2 delivered
    line = progress_line(totals, 1.0, t["sessions"])
    assert ", 2 sessions," in line


def test_librdkafka_log_goes_through_python_logging_rate_limited(capfd, caplog) -> None:
    """A producer that cannot reach its broker: its retries are log records
    of `protosessions.kafka` (at most a few), nothing is printed directly."""
    sink = DeliveredKafkaSink(closed_port(), "t", {"message.timeout.ms": "3000"}).build("s", 0, 1)
    with caplog.at_level(logging.DEBUG, logger="protosessions.kafka"):
        with pytest.raises(DeliveryError):
            sink.write_batch([("k", b"v")])
    records = [r for r in caplog.records if r.name == "protosessions.kafka"]
    assert 0 < len(records) <= 10, len(records)  # unlimited: ~20 a second
    assert {r.levelno for r in records} <= {logging.ERROR, logging.WARNING, logging.INFO,
                                            logging.CRITICAL, logging.DEBUG}
    assert capfd.readouterr().err == ""


def test_rate_limit_passes_a_few_lines_per_message_per_interval() -> None:
    now = [0.0]
    f = RateLimit(lines=2, interval_s=10.0, clock=lambda: now[0])

    def rec(msg: str) -> logging.LogRecord:
        return logging.LogRecord("x", logging.ERROR, __file__, 1, msg, (), None)

    passed = [f.filter(rec(f"connect failed after {i}ms")) for i in range(20)]
    assert passed == [True, True] + [False] * 18
    assert f.filter(rec("another message"))
    now[0] = 11.0
    r = rec("connect failed after 99ms")
    assert f.filter(r) and "18" in r.getMessage()  # says how many were dropped
    assert rate_limited_kafka_logger() is rate_limited_kafka_logger()
    assert sum(isinstance(x, RateLimit) for x in rate_limited_kafka_logger().filters) == 1


@pytest.mark.kafka
@pytest.mark.parametrize("sig,code", [(signal.SIGINT, 130), (signal.SIGTERM, 0)])
def test_signal_stops_a_kafka_run_cleanly(sig: int, code: int) -> None:
    """Streaming: the closed session is delivered, the open one is not
    closed by the stop, the summary is printed, exit 130 / 0, quickly."""
    brokers = bootstrap()
    t = topics(brokers, 1, prefix="stop")
    proc = subprocess.Popen([sys.executable, "-m", "flows.cli", *run_args(brokers, t)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=ENV)
    try:
        now = wall_now_us()
        produce(brokers, t["hits"], [hit("h1", now - 7200 * 10**6), hit("h2", now - 3600 * 10**6)])
        assert len(consume_all(brokers, t["sessions"], expect=1, timeout=60)) == 1
        start = time.monotonic()
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    text = err.decode()
    assert proc.returncode == code, text[-3000:]
    assert time.monotonic() - start < 20, "a stop must fit a pod's grace period"
    assert text.strip().splitlines()[-1].endswith(f"stopped by {signal.Signals(sig).name}")
    assert "panicked" not in text
    assert len(consume_all(brokers, t["sessions"], idle=2.0)) == 1  # h2's session stays open


def hit(id: str, t_us: int) -> bytes:
    return orjson.dumps({"id": id, "client_id": "c", "property_id": "G-1",
                         "server_received_time": format_time_us(t_us)})


@pytest.mark.kafka
def test_sigterm_stops_both_processes_of_a_cluster_and_resume_loses_nothing(tmp_path) -> None:
    """The StatefulSet's command, two processes (Bytewax's `cluster_main`,
    where the main thread runs the signal handlers): SIGTERM to both pods
    mid-backlog, both exit 0 in time; resuming from the recovery store then
    puts every hit in a session, each once, as the in-process engine does."""
    from test_k8s_cluster import cluster_cmd_env, init_recovery, run_cluster, sessions

    from protosessions.config import Settings
    from protosessions.engine import Engine
    from protosessions.generate import generate_hits

    brokers = bootstrap()
    lines = list(generate_hits(150_000, 8_000, seed=5,
                               start=datetime(2025, 3, 1, tzinfo=timezone.utc)))
    t = topics(brokers, 2, prefix="cstop")
    produce(brokers, t["hits"], lines)
    init_recovery(tmp_path)
    procs = cluster_cmd_env(2, tmp_path, brokers, t)
    streaming = [(cmd, {**env, "PROTOSESSIONS_UNTIL_END": "false"}) for cmd, env in procs]
    ps = [subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                           start_new_session=True) for cmd, env in streaming]
    try:
        time.sleep(4)
        assert all(p.poll() is None for p in ps), "a process ended before the stop"
        start = time.monotonic()
        for p in ps:
            p.send_signal(signal.SIGTERM)
        errs = [p.communicate(timeout=60)[1].decode() for p in ps]
    finally:
        for p in ps:
            if p.poll() is None:
                p.kill()
    assert [p.returncode for p in ps] == [0, 0], "\n".join(e[-2000:] for e in errs)
    assert time.monotonic() - start < 20
    run_cluster(procs)  # resume, to the end of the topic
    got = sessions(brokers, t["sessions"])
    want = [orjson.loads(s) for _, s in Engine(Settings(), future_check=False).run(lines)]
    assert (sorted(h["id"] for s in got.values() for h in s["hits"])
            == sorted(h["id"] for s in want for h in s["hits"]))
