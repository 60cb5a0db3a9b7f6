"""Real services for the integration tests: one Kafka broker and one Redis for the whole session.

The harness starts them itself (Kafka jars from Maven Central, Debian's ``redis-server``), or reuses
servers named by ``STREAMWARDEN_TEST_KAFKA`` (bootstrap servers) and ``STREAMWARDEN_TEST_REDIS_URL``.
A service that cannot be started or reached FAILS the tests that need it; nothing here skips.

Fixtures:
    kafka_bootstrap     bootstrap servers of the session broker
    redis_url           URL of the session Redis
    redis_client        a ``redis.asyncio.Redis`` on it, closed after the test
    topic_prefix        a topic prefix unique to the test (``t<8 hex>``)
    make_topics         creates the streamwarden topics under ``topic_prefix`` (deleted afterwards)
    three_node_cluster  a healthy 3-node ``LocalKafka`` (started on first use, healed between tests)
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Awaitable
from typing import Protocol

import pytest
import pytest_asyncio
import redis.asyncio as aioredis

from topics.names import Topic
from workers.infra import InfraError, LocalKafka, LocalRedis, delete_topics, ensure_topics
from workers.infra.kafka_admin import RETRIABLE_ERRORS, broker_ids

_KAFKA_ENV = "STREAMWARDEN_TEST_KAFKA"
_REDIS_ENV = "STREAMWARDEN_TEST_REDIS_URL"


class TopicsFactory(Protocol):
    def __call__(
        self, partitions: int = 2, *, replication: int = 1, prefix: str | None = None
    ) -> Awaitable[dict[Topic, str]]: ...


@pytest_asyncio.fixture(scope="session")
async def kafka_bootstrap() -> AsyncIterator[str]:
    external = os.environ.get(_KAFKA_ENV)
    if external:
        try:
            await broker_ids(external, request_timeout_ms=10_000)
        except RETRIABLE_ERRORS as exc:
            pytest.fail(f"{_KAFKA_ENV}={external} does not answer: {exc!r}", pytrace=False)
        yield external
        return
    kafka = LocalKafka(nodes=1)
    try:
        await kafka.start()
    except InfraError as exc:
        pytest.fail(f"the test Kafka broker did not start: {exc}", pytrace=False)
    try:
        yield kafka.bootstrap_servers
    finally:
        await kafka.stop()


@pytest_asyncio.fixture(scope="session")
async def redis_url() -> AsyncIterator[str]:
    external = os.environ.get(_REDIS_ENV)
    if external:
        client = aioredis.from_url(external)
        try:
            await client.ping()
        except (OSError, aioredis.RedisError) as exc:
            pytest.fail(f"{_REDIS_ENV}={external} does not answer: {exc!r}", pytrace=False)
        finally:
            await client.aclose()
        yield external
        return
    server = LocalRedis()
    try:
        await server.start()
    except InfraError as exc:
        pytest.fail(f"the test Redis did not start: {exc}", pytrace=False)
    try:
        yield server.url
    finally:
        await server.stop()


@pytest_asyncio.fixture
async def redis_client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.from_url(redis_url)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
def topic_prefix() -> str:
    return f"t{uuid.uuid4().hex[:8]}"


@pytest_asyncio.fixture
async def make_topics(kafka_bootstrap: str, topic_prefix: str) -> AsyncIterator[TopicsFactory]:
    created: list[str] = []

    async def factory(partitions: int = 2, *, replication: int = 1, prefix: str | None = None) -> dict[Topic, str]:
        ensured = await ensure_topics(
            kafka_bootstrap,
            prefix=prefix if prefix is not None else topic_prefix,
            partitions=partitions,
            replication=replication,
        )
        created.extend(ensured.created)
        return ensured.names

    yield factory
    if created:
        await delete_topics(kafka_bootstrap, created)


@pytest_asyncio.fixture(scope="session")
async def _three_node_session() -> AsyncIterator[LocalKafka]:
    kafka = LocalKafka(nodes=3)
    try:
        await kafka.start()
    except InfraError as exc:
        pytest.fail(f"the 3-node Kafka cluster did not start: {exc}", pytrace=False)
    try:
        yield kafka
    finally:
        await kafka.stop()


async def _heal(kafka: LocalKafka) -> None:
    """Resume paused nodes and restart stopped or killed ones, then wait for all three."""
    for node_id in kafka.node_ids:
        node = kafka.node(node_id)
        if node.running() and node.paused:
            kafka.resume_node(node_id)
        elif not node.running():
            await kafka.restart_node(node_id)
    await kafka.wait_ready(set(kafka.node_ids), timeout_s=90.0)


@pytest_asyncio.fixture
async def three_node_cluster(_three_node_session: LocalKafka) -> AsyncIterator[LocalKafka]:
    """The session's 3-node cluster with every node up; tests may kill, stop or pause nodes."""
    await _heal(_three_node_session)
    yield _three_node_session
    await _heal(_three_node_session)
