from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from tests.contracts.state import StoreContract, turn, upd
from workers.state.memory_store import MemoryStore


class TestMemoryStore(StoreContract):
    @pytest.fixture
    async def store(self) -> AsyncIterator[MemoryStore]:
        s = MemoryStore()
        yield s
        await s.aclose()


async def test_expiry(monkeypatch: pytest.MonkeyPatch) -> None:
    store = MemoryStore(ttl_s=10)
    await store.open_turn(turn(), [1] * 5)
    now = time.monotonic()
    monkeypatch.setattr(time, "monotonic", lambda: now + 11)
    assert await store.load("c1") is None


async def test_a_finished_turn_expires_after_the_finished_ttl() -> None:
    store = MemoryStore(ttl_s=3600, finished_ttl_s=0.05)
    await store.open_turn(turn(), [1] * 5)
    await store.apply_chunk("c1", "m1", epoch=1, seq=0, new_ids=[7], update=upd(1))
    await asyncio.sleep(0.1)
    assert await store.load("c1") is not None  # open: the idle TTL
    await store.apply_chunk("c1", "m1", epoch=1, seq=1, new_ids=[8], update=upd(2, final=True))
    await asyncio.sleep(0.1)
    assert await store.load("c1") is None
