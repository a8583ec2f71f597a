"""`protosessions topics create`: the hits, sessions and dead-letter topics,
idempotently."""

from __future__ import annotations

import argparse
import sys

from .options import kafka_config
from protosessions.units import parse_duration_us


def create_topics(brokers: str, names: list[str], partitions: int, replication: int,
                  config: dict[str, str], timeout: float = 30.0,
                  topic_configs: dict[str, dict[str, str]] | None = None) -> dict[str, str]:
    """Create each topic that is missing; returns `{topic: "created" | "exists"}`.
    A broker that does not answer within `timeout` (or refuses) raises
    `flows.kafka_admin.KafkaUnavailable`, one line naming it and the cause."""
    from confluent_kafka import KafkaError, KafkaException
    from confluent_kafka.admin import NewTopic

    from .kafka_admin import KafkaUnavailable, connect

    admin = connect(brokers, config, timeout)  # else create_topics waits without a word
    topic_configs = topic_configs or {}
    futures = admin.create_topics([NewTopic(n, num_partitions=partitions,
                                            replication_factor=replication,
                                            config=topic_configs.get(n, {})) for n in names],
                                  request_timeout=timeout)
    result = {}
    for name, future in futures.items():
        try:
            future.result(timeout)
            result[name] = "created"
        except KafkaException as e:
            err = e.args[0]
            if err.code() == KafkaError.TOPIC_ALREADY_EXISTS:
                result[name] = "exists"
            else:
                raise KafkaUnavailable(f"Kafka at {brokers}: cannot create topic {name!r}: "
                                       f"{err.str()}") from None
    return result


def cmd_topics(args: argparse.Namespace) -> int:
    from .usage import UsageError

    if not args.kafka_brokers:
        raise UsageError("protosessions topics create: --kafka-brokers (or PROTOSESSIONS_KAFKA_BROKERS) is required")
    if args.partitions < 1 or args.replication_factor < 1:
        raise UsageError("protosessions topics create: --partitions and --replication-factor must be >= 1")
    try:
        conf = kafka_config(args.kafka_config)
    except ValueError as e:
        raise UsageError(f"protosessions topics create: {e}") from None
    names = [args.hits_topic, args.sessions_topic, args.dead_letter_topic]
    try:
        timeout_s = parse_duration_us(args.kafka_timeout) / 1e6
    except ValueError as e:
        raise UsageError(f"protosessions topics create: --kafka-timeout: {e}") from None
    from .kafka_admin import KafkaUnavailable

    try:
        result = create_topics(args.kafka_brokers, names, args.partitions,
                               args.replication_factor, conf, timeout=timeout_s)
    except KafkaUnavailable as e:  # broker unreachable, not authorised...
        raise UsageError(f"protosessions topics create: {e}") from None
    for name in names:
        print(f"{name}: {result[name]}", file=sys.stderr)
    return 0
