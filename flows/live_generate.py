"""`protosessions generate --kafka-brokers ...`: realistic hits produced live.

The hits come from the same generator as the file one
(`protosessions.generate`): the same clients, visits, idle gaps, shared
addresses, logins, retries and session stamps, in the generator's order. They
are sent at `rate` hits per second, each with `server_received_time` set to
the wall time at which it is produced, so the generator's hours of traffic
are played in `duration` (a visit's hits come in a burst, its idle gaps
shrink in proportion). Messages are keyed by `client_id`, as a tracker would
partition them, through an idempotent producer (`acks=all`); every delivery
report is checked.

Without `duration` the job runs until interrupted, one hour of hits per
round, each round a fresh population of clients (seed, seed + 1, ...).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Callable, Iterator, Optional

import orjson
from confluent_kafka import KafkaException, Producer

from protosessions.generate import generate_hits
from protosessions.timefmt import format_time_us, wall_now_us

ROUND_S = 3600.0  # hits generated per round without --duration: one hour's worth
PRODUCER_CONFIG = {"enable.idempotence": True, "acks": "all", "linger.ms": 5}


class LiveGenerateError(Exception):
    """A setting or broker problem the user fixes (exit code 2)."""


@dataclass
class LiveResult:
    """What a live run produced."""

    topic: str
    produced: int = 0
    delivered: int = 0
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0
    interrupted: bool = False

    @property
    def ok(self) -> bool:
        return not self.errors and self.delivered == self.produced

    def summary(self) -> str:
        """The one line printed at the end."""
        rate = self.delivered / self.seconds if self.seconds > 0 else 0.0
        failed = self.produced - self.delivered
        tail = f", {failed} not delivered ({self.errors[0]})" if failed or self.errors else ""
        stop = " (interrupted)" if self.interrupted else ""
        return (f"protosessions generate: {self.delivered} hits to topic {self.topic} in "
                f"{self.seconds:.1f}s, {rate:.1f} hits/s{tail}{stop}")


def live_hits(rate: float, duration_s: Optional[float], clients: int, seed: int,
              now_us: Callable[[], int] = wall_now_us,
              start: Optional[datetime] = None) -> Iterator[tuple[bytes, bytes]]:
    """`(key, value)` of each hit in generator order, `server_received_time`
    set to `now_us()` when the hit is taken. Finite with `duration_s`.
    `start` (default: now) dates the generator's first-visit times."""
    rnd = 0
    while True:
        span = duration_s if duration_s is not None else ROUND_S
        n = max(1, round(rate * span))
        begin = start or datetime.now(timezone.utc)  # plausible first-visit times in client IDs
        for line in generate_hits(n, clients, seed + rnd, start=begin):
            hit = orjson.loads(line)
            hit["server_received_time"] = format_time_us(now_us())
            yield hit["client_id"].encode(), orjson.dumps(hit)
        if duration_s is not None:
            return
        rnd += 1


def produce_live(brokers: str, topic: str, rate: float, duration_s: Optional[float] = None,
                 clients: int = 1000, seed: int = 1, limit: Optional[int] = None,
                 config: Optional[dict[str, str]] = None) -> LiveResult:
    """Produce hits at `rate` per second until `duration_s` has passed,
    `limit` hits were sent, or Ctrl-C; then flush and report."""
    conf = dict(config or {})
    for key, bad in (("enable.idempotence", "false"), ("acks", "0"), ("acks", "1")):
        if str(conf.get(key, "")).lower() == bad:
            raise LiveGenerateError(f"--kafka-config {key}={bad}: the generator's producer "
                                    "is idempotent with acks=all")
    try:
        producer = Producer({"bootstrap.servers": brokers, **PRODUCER_CONFIG, **conf})
    except KafkaException as e:
        raise LiveGenerateError(str(e)) from None
    result = LiveResult(topic)

    def delivered(err, _msg) -> None:
        if err is None:
            result.delivered += 1
        elif len(result.errors) < 10:
            result.errors.append(str(err))

    start = time.monotonic()
    deadline = None if duration_s is None else start + duration_s
    try:
        for i, (key, value) in enumerate(live_hits(rate, duration_s, clients, seed)):
            if limit is not None and i >= limit:
                break
            due = start + i / rate
            while True:  # wait for this hit's moment, serving delivery reports meanwhile
                now = time.monotonic()
                if deadline is not None and now >= deadline:
                    break
                if now >= due:
                    break
                producer.poll(min(due - now, 0.1))
            if deadline is not None and time.monotonic() >= deadline:
                break
            while True:
                try:
                    producer.produce(topic, value=value, key=key, on_delivery=delivered)
                    break
                except BufferError:  # local queue full: let librdkafka send
                    producer.poll(0.1)
            result.produced += 1
            producer.poll(0)
    except KeyboardInterrupt:
        result.interrupted = True
    except KafkaException as e:
        result.errors.append(str(e))
    left = producer.flush(30)
    if left:
        result.errors.append(f"{left} messages still queued after 30 s")
    result.seconds = time.monotonic() - start
    return result
