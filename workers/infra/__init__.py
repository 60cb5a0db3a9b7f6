"""Local infrastructure without Docker: Apache Kafka (KRaft, jars from Maven Central) and Redis.

Used in-process by the integration tests, the demo and the benchmarks::

    async with LocalKafka(nodes=1) as kafka, LocalRedis() as redis:
        await ensure_topics(kafka.bootstrap_servers, prefix="guard", partitions=4)

and from the shell through ``streamwarden infra up|down|status`` (``workers.infra.commands``).
"""

from __future__ import annotations

from workers.infra.errors import (
    FetchError,
    InfraError,
    MissingProgram,
    NotRunning,
    StartupError,
    TopicError,
    TopicMismatch,
)
from workers.infra.kafka import LocalKafka
from workers.infra.maven import DEFAULT_KAFKA_VERSION, KafkaLibs, fetch_kafka_libs
from workers.infra.redis_server import LocalRedis
from workers.infra.topics import EnsuredTopics, delete_topics, ensure_topics

__all__ = [
    "DEFAULT_KAFKA_VERSION",
    "EnsuredTopics",
    "FetchError",
    "InfraError",
    "KafkaLibs",
    "LocalKafka",
    "LocalRedis",
    "MissingProgram",
    "NotRunning",
    "StartupError",
    "TopicError",
    "TopicMismatch",
    "delete_topics",
    "ensure_topics",
    "fetch_kafka_libs",
]
