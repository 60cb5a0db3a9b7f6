"""The KV page table: byte budget, page accounting, LRU eviction, truncation."""

from __future__ import annotations

import pytest

from workers.engine.kv import KVBudgetError, KVLayout, KVPool
from workers.engine.testing import BACKBONES, Size


class _Config:
    def __init__(self, **values: object) -> None:
        self.__dict__.update(values)


@pytest.mark.parametrize(("size", "kib"), [("0.6B", 112), ("4B", 144), ("8B", 144)])
def test_kv_bytes_per_token_of_the_released_sizes(size: Size, kib: int) -> None:
    layout = KVLayout.from_config(_Config(**BACKBONES[size]), dtype_bytes=2, page_size=16)  # type: ignore[arg-type]
    assert layout.bytes_per_token == kib * 1024
    assert layout.bytes_per_page == 16 * kib * 1024


def _pool(pages: int, page_size: int = 4) -> KVPool:
    layout = KVLayout(layers=1, kv_heads=1, head_dim=1, dtype_bytes=1, page_size=page_size)
    return KVPool(layout, budget_bytes=pages * layout.bytes_per_page)


def test_budget_smaller_than_a_page_is_refused() -> None:
    layout = KVLayout(layers=2, kv_heads=2, head_dim=4, dtype_bytes=4, page_size=16)
    with pytest.raises(KVBudgetError, match="holds no page"):
        KVPool(layout, budget_bytes=layout.bytes_per_page - 1)


def test_pages_follow_lengths() -> None:
    pool = _pool(8)
    assert pool.reserve("a", 0, 5, set()) == (0, 1)
    pool.commit("a", range(5), at_prompt_end=True)
    assert pool.get("a") is not None and pool.get("a").length == 5  # type: ignore[union-attr]
    assert pool.reserve("a", 5, 3, set()) == (0, 1)  # fits in the second page
    pool.commit("a", range(3), at_prompt_end=False)
    assert pool.reserve("a", 8, 1, set()) == (0, 1, 2)
    assert pool.used_pages == 3 and pool.free_pages == 5


def test_continuing_at_the_wrong_length_is_a_bug() -> None:
    pool = _pool(8)
    pool.reserve("a", 0, 4, set())
    pool.commit("a", range(4), at_prompt_end=False)
    with pytest.raises(ValueError, match="holds 4 tokens, cannot continue at 3"):
        pool.reserve("a", 3, 1, set())
    with pytest.raises(ValueError, match="holds None tokens"):
        pool.reserve("b", 2, 1, set())


def test_least_recently_active_unprotected_conversations_are_evicted() -> None:
    pool = _pool(6)
    for key in ("a", "b", "c"):
        pool.reserve(key, 0, 8, set())
        pool.commit(key, range(8), at_prompt_end=False)
    pool.reserve("a", 8, 0, set())  # touch "a": now "b" is the least recently active
    pool.reserve("d", 0, 8, protected={"b"})  # "b" is in the forward being planned
    assert "c" not in pool and {"a", "b", "d"} <= set(pool.keys())
    assert pool.stats.evictions == 1 and pool.stats.evicted_tokens == 8


def test_no_eviction_when_even_everything_would_not_fit() -> None:
    pool = _pool(4)
    pool.reserve("a", 0, 8, set())
    pool.commit("a", range(8), at_prompt_end=False)
    with pytest.raises(KVBudgetError, match="2 can be freed"):
        pool.reserve("b", 0, 12, protected={"a"})
    assert "a" in pool and "b" not in pool
    with pytest.raises(KVBudgetError):
        pool.reserve("b", 0, 17, set())
    assert "a" in pool  # nothing evicted for a request that could never fit


def test_restart_and_truncate_free_pages() -> None:
    pool = _pool(8)
    pool.reserve("a", 0, 10, set())
    pool.commit("a", range(10), at_prompt_end=False)
    pool.truncate("a", 5)
    assert pool.get("a").length == 5 and pool.used_pages == 2  # type: ignore[union-attr]
    assert list(pool.get("a").ids) == [0, 1, 2, 3, 4]  # type: ignore[union-attr]
    pool.reserve("a", 0, 3, set())  # a new prompt restarts the conversation
    assert pool.used_pages == 1
    pool.drop("a")
    pool.drop("never-seen")
    assert pool.used_pages == 0 and len(pool) == 0


def test_pages_handed_out_for_the_first_time_are_reported_once() -> None:
    pool = _pool(6)
    pool.reserve("a", 0, 8, set())
    assert pool.take_fresh_pages() == (0, 1)
    assert pool.take_fresh_pages() == ()
    pool.commit("a", range(8), at_prompt_end=False)
    pool.drop("a")
    pool.reserve("b", 0, 12, set())  # reuses 1 and 0, then takes the unused page 2
    assert pool.take_fresh_pages() == (2,)
