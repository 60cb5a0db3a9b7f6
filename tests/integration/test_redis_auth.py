"""Redis with authentication on: the worker moderates through it, a wrong password is refused
with a reason, and the password appears in no log line and no error message."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from tests.integration.pipeline import Observer, moderate_one, new_worker, planted_checkpoint, worker_settings
from workers.client import GuardClient
from workers.infra import LocalRedis, ensure_topics
from workers.state.base import StoreUnavailable
from workers.state.redis_store import RedisStore

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PASSWORD = "n0t-in-any-log-" + uuid.uuid4().hex[:8]
CHUNKS = 12


async def test_a_worker_moderates_through_a_redis_that_requires_auth(kafka_bootstrap: str, tmp_path: Path) -> None:
    prefix = f"a{uuid.uuid4().hex[:8]}"
    await ensure_topics(kafka_bootstrap, prefix=prefix, partitions=1)
    async with LocalRedis(run_dir=tmp_path / "redis", password=PASSWORD) as redis:
        assert PASSWORD in redis.url and PASSWORD not in redis.address
        assert PASSWORD not in str(redis.describe())  # the infra state file never holds it

        # Without the password (or with a wrong one) the store is refused, and says why.
        for url in (redis.address, redis.url.replace(PASSWORD, "wrong")):
            store = RedisStore(url, namespace="test:auth", ttl_s=60)
            with pytest.raises(StoreUnavailable, match=r"(?i)auth") as refused:
                await store.ping()
            assert PASSWORD not in str(refused.value)
            await store.aclose()

        settings = worker_settings(kafka_bootstrap, redis.url, prefix, planted_checkpoint(tmp_path), 1)
        async with (
            new_worker("w1", tmp_path / "run", settings) as worker,
            Observer(kafka_bootstrap, prefix) as obs,
            GuardClient(kafka_bootstrap, topic_prefix=prefix) as client,
        ):
            await moderate_one(client, obs, chunks=CHUNKS, within_s=60)
            assert not obs.dead, [d.reason for d in obs.dead]
            log = worker.log_tail(2000)
        assert PASSWORD not in log
        assert PASSWORD not in (tmp_path / "redis" / "redis.log").read_text(encoding="utf-8")
