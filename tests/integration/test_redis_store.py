"""The ConversationStore contract against a real Redis (the same suite the in-memory twin passes)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
import redis.asyncio as aioredis

from tests.contracts.state import StoreContract, turn, upd
from workers.state import keys
from workers.state.redis_store import RedisStore

pytestmark = pytest.mark.integration


class TestRedisStore(StoreContract):
    @pytest_asyncio.fixture
    async def store(self, redis_url: str) -> AsyncIterator[RedisStore]:
        s = RedisStore(redis_url, namespace=f"t{uuid.uuid4().hex[:8]}", ttl_s=60)
        yield s
        await s.aclose()


async def test_every_write_sets_a_ttl(redis_url: str, redis_client: aioredis.Redis) -> None:
    ns = f"t{uuid.uuid4().hex[:8]}"
    store = RedisStore(redis_url, namespace=ns, ttl_s=120)
    try:
        await store.open_turn(turn(), [1] * 5)
        for key in (keys.conv_key(ns, "c1"), keys.log_key(ns, "c1")):
            ttl = await redis_client.pttl(key)
            assert 100_000 < ttl <= 120_000, (key, ttl)
    finally:
        await store.aclose()


async def test_a_finished_turn_expires_after_the_finished_ttl(redis_url: str, redis_client: aioredis.Redis) -> None:
    ns = f"t{uuid.uuid4().hex[:8]}"
    store = RedisStore(redis_url, namespace=ns, ttl_s=3600, finished_ttl_s=30)
    try:
        await store.open_turn(turn(), [1] * 5)
        await store.apply_chunk("c1", "m1", epoch=1, seq=0, new_ids=[7], update=upd(1))
        keys_of = (keys.conv_key(ns, "c1"), keys.log_key(ns, "c1"))
        for key in keys_of:
            assert await redis_client.pttl(key) > 3_000_000, key  # open: the idle TTL
        await store.apply_chunk("c1", "m1", epoch=1, seq=1, new_ids=[8], update=upd(2, final=True))
        for key in keys_of:
            assert 0 < await redis_client.pttl(key) <= 30_000, key
        await store.open_turn(turn(cid="c2"), [1] * 5)
        await store.apply_chunk("c2", "m1", epoch=1, seq=0, new_ids=[7], update=upd(1, cut='{"seq":0}'))
        assert 0 < await redis_client.pttl(keys.conv_key(ns, "c2")) <= 30_000  # a cut-off ends the turn too
    finally:
        await store.aclose()


async def test_records_expire(redis_url: str) -> None:
    store = RedisStore(redis_url, namespace=f"t{uuid.uuid4().hex[:8]}", ttl_s=60)
    store._ttl_ms = 200  # the setting's floor is a minute; shorten it to watch expiry happen
    try:
        await store.open_turn(turn(), [1] * 5)
        await asyncio.sleep(0.5)
        assert await store.load("c1") is None
        assert await store.read_log("c1") == []
    finally:
        await store.aclose()


async def test_ping_loads_the_scripts_before_the_first_write(redis_url: str, redis_client: aioredis.Redis) -> None:
    store = RedisStore(redis_url, namespace=f"t{uuid.uuid4().hex[:8]}", ttl_s=60)
    try:
        shas = [store._open_turn.sha, store._apply_chunk.sha]
        await redis_client.script_flush()
        assert await redis_client.script_exists(*shas) == [False, False]
        assert await store.ping()
        assert await redis_client.script_exists(*shas) == [True, True]
    finally:
        await store.aclose()
