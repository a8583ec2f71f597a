"""The hits, sessions and dead-letter topics, created idempotently
(`protosessions topics create`, whose flags `flows.cli` reads)."""

from __future__ import annotations


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
