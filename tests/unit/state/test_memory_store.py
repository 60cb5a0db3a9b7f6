from __future__ import annotations

import time
from collections.abc import AsyncIterator

import pytest

from tests.contracts.state import StoreContract, turn
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
