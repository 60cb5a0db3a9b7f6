"""Kafka with SASL/SCRAM on: the worker, the producer client and the topic admin authenticate, a
client without credentials or with a wrong password gets nothing, and the password is never logged."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest

from tests.integration.pipeline import Observer, moderate_one, new_worker, planted_checkpoint, worker_settings
from workers.client import GuardClient
from workers.infra import LocalKafka, LocalRedis, ensure_topics
from workers.infra.kafka_admin import RETRIABLE_ERRORS, broker_ids
from workers.kafka_auth import KafkaAuth

pytestmark = [pytest.mark.integration, pytest.mark.slow]

USER = "streamwarden"
PASSWORD = "scram-" + uuid.uuid4().hex[:12]
CHUNKS = 12


async def test_a_worker_moderates_through_a_broker_that_requires_scram(tmp_path: Path) -> None:
    prefix = f"s{uuid.uuid4().hex[:8]}"
    async with (
        LocalKafka(nodes=1, run_dir=tmp_path / "kafka", scram_user=(USER, PASSWORD)) as kafka,
        LocalRedis(run_dir=tmp_path / "redis") as redis,
    ):
        bootstrap = kafka.bootstrap_servers
        assert PASSWORD not in repr(kafka.auth)

        # No credentials, or a wrong password: the broker answers nothing.
        wrong = KafkaAuth(protocol="SASL_PLAINTEXT", username=USER, password="wrong")
        for auth in (KafkaAuth(), wrong):
            with pytest.raises(RETRIABLE_ERRORS):
                await asyncio.wait_for(broker_ids(bootstrap, request_timeout_ms=3_000, auth=auth), 15)
        assert await broker_ids(bootstrap, auth=kafka.auth) == {1}

        await ensure_topics(bootstrap, prefix=prefix, partitions=1, auth=kafka.auth)
        settings = worker_settings(bootstrap, redis.url, prefix, planted_checkpoint(tmp_path), 1)
        settings |= {
            "kafka.security_protocol": "SASL_PLAINTEXT",
            "kafka.sasl_mechanism": "SCRAM-SHA-256",
            "kafka.sasl_username": USER,
            "kafka.sasl_password": PASSWORD,
        }
        async with (
            new_worker("w1", tmp_path / "run", settings) as worker,
            Observer(bootstrap, prefix, auth=kafka.auth) as obs,
            GuardClient(bootstrap, topic_prefix=prefix, auth=kafka.auth) as client,
        ):
            await moderate_one(client, obs, chunks=CHUNKS, within_s=90)
            assert not obs.dead, [d.reason for d in obs.dead]
            log = worker.log_tail(5000)
        assert PASSWORD not in log
