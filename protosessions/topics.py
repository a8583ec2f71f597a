"""`protosessions topics create`: the hits, sessions and dead-letter topics, idempotently."""

from __future__ import annotations

import argparse
import sys

from .options import kafka_config


def create_topics(brokers: str, names: list[str], partitions: int, replication: int,
                  config: dict[str, str], timeout: float = 30.0) -> dict[str, str]:
    """Create each topic that is missing; returns `{topic: "created" | "exists"}`."""
    from confluent_kafka import KafkaError, KafkaException
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": brokers, **config})
    futures = admin.create_topics([NewTopic(n, num_partitions=partitions,
                                            replication_factor=replication) for n in names],
                                  request_timeout=timeout)
    result = {}
    for name, future in futures.items():
        try:
            future.result(timeout)
            result[name] = "created"
        except KafkaException as e:
            if e.args[0].code() == KafkaError.TOPIC_ALREADY_EXISTS:
                result[name] = "exists"
            else:
                raise
    return result


def cmd_topics(args: argparse.Namespace) -> int:
    from .cli import UsageError

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
        result = create_topics(args.kafka_brokers, names, args.partitions,
                               args.replication_factor, conf)
    except Exception as e:  # broker unreachable, not authorised...
        raise UsageError(f"protosessions topics create: {e}") from None
    for name in names:
        print(f"{name}: {result[name]}", file=sys.stderr)
    return 0
