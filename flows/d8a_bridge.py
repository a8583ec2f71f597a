"""`protosessions d8a-bridge`: takes d8a's worker's place on its filesystem
queue, producing each hit to the hits topic for `protosessions run
--input-format d8a` (SPEC "The d8a form", docs/d8a.md).

Tasks are read in name order (`flows.d8a_queue`); each hit, the JSON bytes
d8a wrote, is produced keyed by its `ClientID` through an idempotent
producer (`acks=all`), and a task is deleted only once every hit of it is
acknowledged: killed at any moment, the bridge loses nothing, and a task it
had sent but not yet deleted is sent again at the next start (its hits are
duplicates the job drops within their proto-session; docs/d8a.md says what
happens to one whose session had already closed). A file that is no task
is moved to `DIR/rejected/` with one line on stderr; pings are deleted
unsent. Without `--until-empty` it follows the queue as d8a's receiver
writes it, looking again every `--poll-interval`.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import msgspec

from . import stop
from .d8a_queue import REJECTED, BadTask, move_aside, read_task, task_names

PROGRESS_EVERY_S = 5.0


class BridgeError(Exception):
    """The bridge cannot go on (a hit not acknowledged, a task that cannot
    be deleted); the message is one line, the task is kept."""


@dataclass
class Counts:
    tasks: int = 0
    hits: int = 0
    pings: int = 0
    rejected: int = 0


class _Key(msgspec.Struct):
    ClientID: str | None = None


_decode_key = msgspec.json.Decoder(_Key).decode


def client_key(raw: bytes) -> bytes | None:
    """The message key of a hit: its `ClientID` (UTF-8), or None where the
    hit has none (the job dead-letters such a hit; any partition will do)."""
    try:
        cid = _decode_key(raw).ClientID
    except Exception:  # not an object, or ClientID not text: no key
        return None
    return cid.encode() if cid else None


class Bridge:
    """One queue to one topic (`run` until drained or stopped)."""

    def __init__(self, queue: Path, producer, topic: str, poll_s: float,
                 err: TextIO | None = None) -> None:
        self.queue = queue
        self.producer = producer
        self.topic = topic
        self.poll_s = poll_s
        self.err = err
        self.counts = Counts()

    def run(self, until_empty: bool) -> None:
        """Handle tasks in name order until a stop is requested, or (with
        `until_empty`) until a look at the queue finds no task."""
        while not stop.requested():
            try:
                names = task_names(self.queue)
            except OSError as e:
                raise BridgeError(f"cannot list the queue {self.queue} ({e.strerror})") from None
            if not names:
                if until_empty:
                    return
                self._sleep(self.poll_s)
                continue
            for name in names:
                if stop.requested():
                    return
                self.handle(name)

    def handle(self, name: str) -> None:
        path = self.queue / name
        try:
            data = path.read_bytes()
        except FileNotFoundError:  # taken by someone else meanwhile
            return
        except OSError as e:
            return self._reject(name, f"unreadable ({e.strerror})")
        try:
            task = read_task(data)
        except BadTask as e:
            return self._reject(name, str(e))
        if not task.ping:
            self._send(name, task.hits)
        self._delete(path)
        if task.ping:
            self.counts.pings += 1
        else:
            self.counts.tasks += 1
            self.counts.hits += len(task.hits)

    def _send(self, name: str, hits: list[bytes]) -> None:
        """Produce the hits of one task and wait until the broker has
        acknowledged every one (BridgeError if one is refused)."""
        errors: list = []

        def delivered(err, _msg) -> None:
            if err is not None:
                errors.append(err)

        p = self.producer
        for raw in hits:
            while True:
                try:
                    p.produce(self.topic, value=raw, key=client_key(raw), on_delivery=delivered)
                    break
                except BufferError:  # the local queue is full: let deliveries drain
                    p.poll(0.1)
                except Exception as e:  # e.g. a message larger than the producer takes
                    raise BridgeError(f"task {name}: a hit cannot be produced ({_text(e)}); "
                                      "the task is kept") from None
        while len(p) > 0:  # delivery either succeeds or fails within message.timeout.ms
            p.flush(1.0)
        if errors:
            raise BridgeError(f"task {name}: {len(errors)} of its {len(hits)} hits were not "
                              f"acknowledged ({_text(errors[0])}); the task is kept and will be "
                              "sent again")

    def _delete(self, path: Path) -> None:
        try:
            path.unlink()
        except FileNotFoundError:
            pass
        except OSError as e:
            raise BridgeError(f"cannot delete the sent task {path} ({e.strerror}): its hits would "
                              "be sent again and again; give the bridge write access to the "
                              "queue") from None

    def _reject(self, name: str, why: str) -> None:
        try:
            target = move_aside(self.queue, name)
        except FileNotFoundError:
            return
        except OSError as e:
            raise BridgeError(f"{self.queue / name} is no d8a task ({why}) and cannot be moved "
                              f"to {self.queue / REJECTED} ({e.strerror})") from None
        self.counts.rejected += 1
        print(f"protosessions d8a-bridge: {name} is no d8a task ({why}): moved to {target}",
              file=self.err or sys.stderr, flush=True)

    @staticmethod
    def _sleep(seconds: float) -> None:
        end = time.monotonic() + seconds
        while not stop.requested():
            left = end - time.monotonic()
            if left <= 0:
                return
            time.sleep(min(left, 0.05))


def _text(e: object) -> str:
    arg = getattr(e, "args", None)
    arg = arg[0] if arg else e
    return arg.str() if hasattr(arg, "str") else str(arg)


def progress_line(c: Counts, seconds: float) -> str:
    return (f"protosessions d8a-bridge: {c.tasks} tasks, {c.hits} hits acknowledged, "
            f"{c.pings} pings, {c.rejected} rejected, {seconds:.0f}s")


def summary_line(c: Counts, seconds: float, topic: str, queue: Path) -> str:
    rate = c.hits / seconds if seconds > 0 else 0.0
    return (f"protosessions d8a-bridge: {c.tasks} tasks, {c.hits} hits acknowledged on topic "
            f"{topic}, {c.pings} pings skipped, {c.rejected} files moved to "
            f"{queue / REJECTED}, {seconds:.2f}s, {rate:.0f} hits/s")


def cmd_bridge(args, poll_s: float, timeout_s: float, conf: dict[str, str]) -> int:
    """The CLI command, with its durations (seconds) and librdkafka settings
    as `flows.cli` parsed them: one-line errors (exit 2), the summary line at
    the end; exit 1 when a hit was not acknowledged, 130 after SIGINT."""
    import signal

    from confluent_kafka import Producer

    from .usage import UsageError
    from .kafka_admin import KafkaUnavailable, check_kafka, rate_limited_kafka_logger
    from .options import weakened_delivery

    prog = "protosessions d8a-bridge"
    if not args.kafka_brokers:
        raise UsageError(f"{prog}: --kafka-brokers is required (or PROTOSESSIONS_KAFKA_BROKERS)")
    queue = Path(args.queue)
    if not queue.is_dir():
        raise UsageError(f"{prog}: --queue {queue} is not a directory")
    if not os.access(queue, os.R_OK | os.W_OK | os.X_OK):
        raise UsageError(f"{prog}: --queue {queue}: the bridge must read, delete and move its "
                         "files (no access)")
    if poll_s <= 0 or timeout_s <= 0:
        raise UsageError(f"{prog}: --poll-interval and --kafka-timeout must be more than 0s")
    weak = weakened_delivery(conf)
    if weak:
        raise UsageError(f"{prog}: --kafka-config {weak} would allow lost or duplicated hits: the "
                         "bridge needs enable.idempotence=true and acks=all (leave both unset)")
    try:
        check_kafka(args.kafka_brokers, conf, [args.hits_topic], timeout_s)
    except KafkaUnavailable as e:
        raise UsageError(f"{prog}: {e}") from None
    producer = Producer({**conf, "bootstrap.servers": args.kafka_brokers,
                         "enable.idempotence": True, "acks": "all", "linger.ms": 5,
                         "logger": rate_limited_kafka_logger()})
    bridge = Bridge(queue, producer, args.hits_topic, poll_s)
    start = time.monotonic()
    done = threading.Event()

    def report() -> None:
        while not done.wait(PROGRESS_EVERY_S):
            print(progress_line(bridge.counts, time.monotonic() - start), file=sys.stderr,
                  flush=True)

    reporter = threading.Thread(target=report, daemon=True)
    reporter.start()
    stop.install()
    code = 0
    try:
        bridge.run(args.until_empty)
    except BridgeError as e:
        print(f"{prog}: {e}", file=sys.stderr)
        code = 1
    finally:
        done.set()
        reporter.join()
        producer.flush(timeout_s)
        stopped_by = stop.signal_number()
        stop.reset()
    line = summary_line(bridge.counts, time.monotonic() - start, args.hits_topic, queue)
    if stopped_by is not None:
        line += f"; stopped by {signal.Signals(stopped_by).name}"
    print(line, file=sys.stderr)
    if code:
        return code
    return 130 if stopped_by == signal.SIGINT else 0
