"""Creating streamwarden's topics through the Kafka admin API, idempotently.

The specs come from ``topics.specs.build_specs``; the prefix, partition count and replication
factor come from the settings or the caller. An existing topic is accepted when its partition
count and replication factor are the ones asked for, and is a ``TopicMismatch`` otherwise: the
service never changes a topic's shape behind an operator's back. Topic-level configs
(retention, cleanup policy) are only set at creation.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import (
    KafkaConnectionError,
    TopicAlreadyExistsError,
    UnknownTopicOrPartitionError,
    for_code,
)

from topics.names import DEFAULT_PREFIX, Topic
from topics.specs import TopicSpec, build_specs
from workers.infra.errors import TopicError, TopicMismatch
from workers.infra.kafka_admin import admin_client
from workers.kafka_auth import KafkaAuth
from workers.settings import Settings

logger = logging.getLogger(__name__)

_POLL_S = 0.1


@dataclass(frozen=True, slots=True)
class EnsuredTopics:
    """The outcome of ``ensure_topics``."""

    names: dict[Topic, str]
    "Full topic name of every logical topic."
    created: list[str] = field(default_factory=list)
    "Topics this call created."
    existing: list[str] = field(default_factory=list)
    "Topics that already existed with the right shape."


async def ensure_topics(
    target: Settings | str,
    *,
    prefix: str | None = None,
    partitions: int | None = None,
    replication: int | None = None,
    dlq_partitions: int | None = None,
    timeout_s: float = 30.0,
    auth: KafkaAuth | None = None,
) -> EnsuredTopics:
    """Create the streamwarden topics unless they exist, and wait until every partition has a leader.

    Args:
        target: the settings (bootstrap servers and defaults for the other arguments from
            ``settings.kafka``) or a bootstrap servers string.
        prefix: topic name prefix; default the settings' ``topic_prefix`` or ``"guard"``.
        partitions: partitions of prompts, tokens, verdicts and control; default the settings'
            ``partitions`` or the spec defaults.
        replication: replication factor of every topic; default the settings' or 1.
        dlq_partitions: partitions of the dead-letter topic; default the spec's (1).
        timeout_s: how long creation plus leader election may take.
        auth: how to authenticate; default the settings' (``KafkaAuth.from_settings``) or none.

    Raises:
        TopicMismatch: a topic exists with another partition count or replication factor.
        TopicError: the broker refused to create a topic (e.g. replication above the broker count).
    """
    if isinstance(target, Settings):
        bootstrap = target.kafka.bootstrap_servers
        prefix = prefix if prefix is not None else target.kafka.topic_prefix
        partitions = partitions if partitions is not None else target.kafka.partitions
        replication = replication if replication is not None else target.kafka.replication
        auth = auth if auth is not None else KafkaAuth.from_settings(target.kafka)
    else:
        bootstrap = target
    prefix = prefix if prefix is not None else DEFAULT_PREFIX
    specs = build_specs(partitions=partitions, replication=replication or 1, dlq_partitions=dlq_partitions)
    wanted = {spec.name(prefix): spec for spec in specs.values()}
    try:
        async with admin_client(bootstrap, request_timeout_ms=int(timeout_s * 1000), auth=auth) as admin:
            created, existing = await _create(admin, wanted, timeout_s)
            await _check_shapes(admin, {name: wanted[name] for name in existing})
            await _wait_for_leaders(admin, wanted, time.monotonic() + timeout_s)
    except KafkaConnectionError as exc:
        raise TopicError(f"Kafka at {bootstrap} did not answer: {exc}") from exc
    if created:
        logger.info("created topics %s", ", ".join(created))
    return EnsuredTopics(
        names={topic: spec.name(prefix) for topic, spec in specs.items()}, created=created, existing=existing
    )


async def _create(
    admin: AIOKafkaAdminClient, wanted: dict[str, TopicSpec], timeout_s: float
) -> tuple[list[str], list[str]]:
    new = [
        NewTopic(name, spec.partitions, spec.replication, topic_configs=spec.configs()) for name, spec in wanted.items()
    ]
    response = await admin.create_topics(new, timeout_ms=int(timeout_s * 1000))
    created: list[str] = []
    existing: list[str] = []
    for item in response.topic_errors:
        name, code = item[0], item[1]
        message = item[2] if len(item) > 2 else None
        if code == 0:
            created.append(name)
        elif code == TopicAlreadyExistsError.errno:
            existing.append(name)
        else:
            error = for_code(code)
            raise TopicError(f"creating topic {name} failed: {error.message}: {message or error.description}")
    return sorted(created), sorted(existing)


async def _check_shapes(admin: AIOKafkaAdminClient, existing: dict[str, TopicSpec]) -> None:
    if not existing:
        return
    described = {t["topic"]: t for t in await admin.describe_topics(list(existing))}
    for name, spec in existing.items():
        partitions = described[name]["partitions"]
        replication = len(partitions[0]["replicas"]) if partitions else 0
        if len(partitions) != spec.partitions or replication != spec.replication:
            raise TopicMismatch(
                f"topic {name} exists with {len(partitions)} partitions and replication {replication}, "
                f"but {spec.partitions} partitions and replication {spec.replication} were asked for; "
                "delete the topic or ask for its current shape"
            )


async def _wait_for_leaders(admin: AIOKafkaAdminClient, wanted: dict[str, TopicSpec], deadline: float) -> None:
    """Creation returns before leaders are elected; clients that start right away would get errors."""
    pending: Iterable[str] = list(wanted)
    while True:
        described = await admin.describe_topics(list(pending))
        pending = [t["topic"] for t in described if not _has_leaders(t, wanted[t["topic"]])]
        if not pending:
            return
        if time.monotonic() >= deadline:
            raise TopicError(f"topics {', '.join(pending)} have partitions without a leader")
        await asyncio.sleep(_POLL_S)


def _has_leaders(described: dict[str, Any], spec: TopicSpec) -> bool:
    if described["error_code"] == UnknownTopicOrPartitionError.errno:
        return False
    partitions = described["partitions"]
    return len(partitions) == spec.partitions and all(p["leader"] >= 0 for p in partitions)


async def delete_topics(bootstrap: str, names: list[str], timeout_s: float = 30.0) -> None:
    """Delete topics; names that do not exist are ignored.

    Raises:
        TopicError: the broker refused to delete a topic.
    """
    async with admin_client(bootstrap, request_timeout_ms=int(timeout_s * 1000)) as admin:
        response = await admin.delete_topics(names, timeout_ms=int(timeout_s * 1000))
    for item in response.topic_error_codes:
        name, code = item[0], item[1]
        if code not in (0, UnknownTopicOrPartitionError.errno):
            raise TopicError(f"deleting topic {name} failed: {for_code(code).message}")
