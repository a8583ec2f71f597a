"""Kafka that is not there, or not as expected: a bounded preflight and a
quiet librdkafka.

librdkafka retries a broker it cannot reach (wrong address, unresolvable
host, a SASL or TLS client against a PLAINTEXT listener) forever and logs
every attempt: a run with a wrong broker would never fail. So before a run builds its
flow, `check_kafka` asks for metadata within `--kafka-timeout` and checks
that every topic the run needs exists, and raises `KafkaUnavailable` with
one line naming the broker and the cause. The clients of a running flow log
through `rate_limited_kafka_logger()` instead of librdkafka's stderr.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from typing import Any, Iterable

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, ClusterMetadata

from flows.options import RunConfig

LOGGER = "protosessions.kafka"
LINES_PER_INTERVAL = 3
INTERVAL_S = 60.0

# Errors that no retry within the timeout will cure: fail at once.
_FATAL = {KafkaError._AUTHENTICATION, KafkaError._SSL, KafkaError._INVALID_ARG,
          KafkaError.SASL_AUTHENTICATION_FAILED, KafkaError._UNSUPPORTED_FEATURE}


class KafkaUnavailable(Exception):
    """The broker cannot be used as configured; the message is one line."""


class RateLimit(logging.Filter):
    """Lets through at most `lines` records per `interval_s` for each message
    (digits ignored, so `after 3ms` and `after 5ms` are one message); the
    first record of the next interval says how many were dropped."""

    def __init__(self, lines: int = LINES_PER_INTERVAL, interval_s: float = INTERVAL_S,
                 clock: Any = time.monotonic) -> None:
        super().__init__()
        self.lines = lines
        self.interval_s = interval_s
        self._clock = clock
        self._seen: dict[str, list] = {}  # message -> [window start, passed, dropped]
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        key = re.sub(r"\d+", "#", record.getMessage())
        now = self._clock()
        with self._lock:
            seen = self._seen.get(key)
            if seen is None or now - seen[0] >= self.interval_s:
                if len(self._seen) > 1000:  # many distinct messages: forget old windows
                    self._seen.clear()
                dropped = seen[2] if seen else 0
                self._seen[key] = [now, 1, 0]
                if dropped:
                    record.msg = f"{record.getMessage()} ({dropped} like it dropped in the last " \
                                 f"{self.interval_s:g}s)"
                    record.args = ()
                return True
            if seen[1] < self.lines:
                seen[1] += 1
                return True
            seen[2] += 1
            return False


_logger_lock = threading.Lock()


def rate_limited_kafka_logger() -> logging.Logger:
    """The logger every librdkafka client of the flow is given (`logger=` in
    its config): librdkafka's lines at their own level, through Python
    logging (so handlers and levels apply), rate-limited, never straight to
    the terminal. A reconnecting client logs ~20 lines a second."""
    log = logging.getLogger(LOGGER)
    with _logger_lock:
        if not any(isinstance(f, RateLimit) for f in log.filters):
            log.addFilter(RateLimit())
    return log


def _quiet_logger() -> logging.Logger:
    """The preflight's own librdkafka log: its errors end up in the one line
    `check_kafka` raises, so they are not printed as well."""
    log = logging.getLogger(LOGGER + ".preflight")
    log.propagate = False
    if not log.handlers:
        log.addHandler(logging.NullHandler())
    return log


def connect(brokers: str, config: dict[str, str], timeout_s: float) -> AdminClient:
    """An admin client that has fetched the cluster's metadata within
    `timeout_s`, or `KafkaUnavailable` naming the broker and the last error."""
    admin, _ = _metadata(brokers, config, timeout_s)
    return admin


def _metadata(brokers: str, config: dict[str, str],
              timeout_s: float) -> tuple[AdminClient, ClusterMetadata]:
    errors: list[KafkaError] = []
    try:
        admin = AdminClient({**config, "bootstrap.servers": brokers, "logger": _quiet_logger(),
                             "error_cb": errors.append})
    except (KafkaException, ValueError, TypeError) as e:
        raise KafkaUnavailable(f"Kafka at {brokers}: bad client configuration: "
                               f"{_error_text(e)}") from None
    deadline = time.monotonic() + timeout_s
    while True:
        remaining = deadline - time.monotonic()
        try:
            return admin, admin.list_topics(timeout=max(0.05, min(1.0, remaining)))
        except KafkaException as e:
            errors.append(e.args[0])
        admin.poll(0)  # serves `error_cb`: the reason the request failed
        fatal = [e for e in errors if e.code() in _FATAL or e.fatal()]
        if fatal:
            raise KafkaUnavailable(f"Kafka at {brokers}: {_cause(fatal)}")
        if time.monotonic() >= deadline:
            raise KafkaUnavailable(f"Kafka at {brokers}: not usable within {timeout_s:g}s: "
                                   f"{_cause(errors)}")


def check_kafka(brokers: str, config: dict[str, str], topics: Iterable[str],
                timeout_s: float) -> None:
    """Raise `KafkaUnavailable` (one line) unless the broker answers a
    metadata request within `timeout_s` and every topic in `topics` exists."""
    _, md = _metadata(brokers, config, timeout_s)
    for name in dict.fromkeys(topics):
        topic = md.topics.get(name)
        if topic is None:
            raise KafkaUnavailable(f"Kafka at {brokers}: topic {name!r} does not exist "
                                   "(`protosessions topics create` makes the job's topics)")
        if topic.error is not None:
            raise KafkaUnavailable(f"Kafka at {brokers}: topic {name!r}: {topic.error.str()}")


_PREFIX = re.compile(r"^\S+/(bootstrap|\d+): ")
_AFTER = re.compile(r" \(after \d+ms in state \w+(, \d+ identical error\(s\) suppressed)?\)$")


def _cause(errors: list[KafkaError]) -> str:
    """The most telling of the errors seen: the last one about a broker
    connection, without librdkafka's `host:port/bootstrap:` prefix and
    timing suffix; else the last error."""
    specific = [e for e in errors if e.code() not in (KafkaError._ALL_BROKERS_DOWN,
                                                       KafkaError._TRANSPORT,
                                                       KafkaError._TIMED_OUT)
                or _PREFIX.match(e.str())]
    err = (specific or errors)[-1]
    return _AFTER.sub("", _PREFIX.sub("", err.str())).strip() or err.name()


def _error_text(e: BaseException) -> str:
    """A `KafkaException`'s message, not its `KafkaError{code=…}` repr."""
    arg = e.args[0] if e.args else e
    return arg.str() if isinstance(arg, KafkaError) else str(arg)


def preflight(config: RunConfig) -> None:
    """`check_kafka` for a run on Kafka: its topics, its `--kafka-timeout`
    (what `protosessions run` and `flows.sessions:flow` call first)."""
    if config.streaming:
        check_kafka(config.kafka_brokers, config.kafka_settings,
                    (config.hits_topic, config.sessions_topic, config.dead_letter_topic),
                    config.kafka_timeout_us / 1e6)


__all__ = ["KafkaUnavailable", "RateLimit", "check_kafka", "connect", "preflight",
           "rate_limited_kafka_logger"]
