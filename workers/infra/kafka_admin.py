"""Thin async helpers over ``aiokafka``'s admin client, shared by readiness checks and topic creation."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from workers.kafka_auth import KafkaAuth

logger = logging.getLogger(__name__)

# Errors that mean "the cluster is not (yet) reachable or ready"; readiness loops retry on them.
RETRIABLE_ERRORS: tuple[type[BaseException], ...] = (KafkaError, OSError, TimeoutError)


@contextlib.asynccontextmanager
async def admin_client(
    bootstrap: str, request_timeout_ms: int = 30_000, *, auth: KafkaAuth | None = None
) -> AsyncIterator[AIOKafkaAdminClient]:
    """A started admin client for ``bootstrap`` (authenticated with ``auth``), closed on exit.

    Raises:
        aiokafka.errors.KafkaConnectionError: no bootstrap server answered.
    """
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap,
        request_timeout_ms=request_timeout_ms,
        client_id="streamwarden-infra",
        **(auth or KafkaAuth()).client_options(),
    )
    try:
        await admin.start()
        yield admin
    finally:
        await admin.close()


async def cluster_metadata(
    bootstrap: str, request_timeout_ms: int = 5_000, *, auth: KafkaAuth | None = None
) -> dict[str, Any]:
    """The broker list, cluster id and controller id as one broker reports them.

    Raises:
        aiokafka.errors.KafkaError, OSError, TimeoutError: the cluster did not answer.
    """
    async with admin_client(bootstrap, request_timeout_ms, auth=auth) as admin:
        metadata: dict[str, Any] = await admin.describe_cluster()
    return metadata


async def broker_ids(bootstrap: str, request_timeout_ms: int = 5_000, *, auth: KafkaAuth | None = None) -> set[int]:
    """The ids of the brokers the cluster's metadata lists (registered and unfenced).

    Raises:
        aiokafka.errors.KafkaError, OSError, TimeoutError: the cluster did not answer.
    """
    metadata = await cluster_metadata(bootstrap, request_timeout_ms, auth=auth)
    return {int(b["node_id"]) for b in metadata["brokers"]}
