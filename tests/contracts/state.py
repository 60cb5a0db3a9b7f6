"""The ConversationStore contract, run against the in-memory store (unit) and real Redis (integration)."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest

from workers.state.base import ApplyStatus, ChunkUpdate, ConversationStore, TurnState


def turn(cid: str = "c1", mid: str = "m1", epoch: int = 1, prompt: int = 5) -> TurnState:
    return TurnState(
        conversation_id=cid, message_id=mid, epoch=epoch, policy="strict", prompt_len=prompt, log_len=prompt
    )


def upd(n: int, *, cut: str = "", final: bool = False) -> ChunkUpdate:
    return ChunkUpdate(response_tokens=n, tokenizer_state='{"p":"x"}', carry='{"prev":"safe"}', cutoff=cut, final=final)


class StoreContract:
    """Subclasses provide a ``store`` fixture yielding a fresh ConversationStore."""

    async def test_missing_conversation(self, store: ConversationStore) -> None:
        assert await store.load("nope") is None
        assert await store.read_log("nope") == []
        status = await store.apply_chunk("nope", "m", epoch=1, seq=0, new_ids=[1], update=upd(1))
        assert status is ApplyStatus.MISSING

    async def test_open_turn_round_trip(self, store: ConversationStore) -> None:
        state = replace(turn(), prompt_risk="safe", prompt_action="allow")
        assert await store.open_turn(state, [10, 11, 12, 13, 14]) is ApplyStatus.OK
        assert await store.load("c1") == state
        assert await store.read_log("c1") == [10, 11, 12, 13, 14]
        assert await store.read_log("c1", end=2) == [10, 11]
        assert await store.read_log("c1", end=0) == []

    async def test_open_turn_is_idempotent_per_message(self, store: ConversationStore) -> None:
        assert await store.open_turn(turn(), [1] * 5) is ApplyStatus.OK
        await store.apply_chunk("c1", "m1", epoch=1, seq=0, new_ids=[7], update=upd(1))
        assert await store.open_turn(turn(), [2] * 5) is ApplyStatus.DUPLICATE
        state = await store.load("c1")
        assert state is not None and state.next_seq == 1
        assert await store.read_log("c1") == [1] * 5 + [7]

    async def test_new_message_replaces_turn(self, store: ConversationStore) -> None:
        await store.open_turn(turn(), [1] * 5)
        await store.apply_chunk("c1", "m1", epoch=1, seq=0, new_ids=[7, 8], update=upd(2, cut='{"seq":0}'))
        assert await store.open_turn(turn(mid="m2", prompt=3), [4, 5, 6]) is ApplyStatus.OK
        state = await store.load("c1")
        assert state is not None
        assert (state.message_id, state.next_seq, state.cutoff, state.log_len) == ("m2", 0, "", 3)
        assert await store.read_log("c1") == [4, 5, 6]

    async def test_chunks_apply_in_order_only(self, store: ConversationStore) -> None:
        await store.open_turn(turn(), [1] * 5)
        assert await store.apply_chunk("c1", "m1", epoch=1, seq=1, new_ids=[9], update=upd(1)) is ApplyStatus.GAP
        assert await store.apply_chunk("c1", "m1", epoch=1, seq=0, new_ids=[7, 8], update=upd(2)) is ApplyStatus.OK
        assert (
            await store.apply_chunk("c1", "m1", epoch=1, seq=0, new_ids=[7, 8], update=upd(2)) is ApplyStatus.DUPLICATE
        )
        assert (
            await store.apply_chunk("c1", "m1", epoch=1, seq=1, new_ids=[9], update=upd(3, final=True))
            is ApplyStatus.OK
        )
        state = await store.load("c1")
        assert state is not None
        assert (state.next_seq, state.response_tokens, state.log_len, state.final) == (2, 3, 8, True)
        assert (state.tokenizer_state, state.carry) == ('{"p":"x"}', '{"prev":"safe"}')
        assert await store.read_log("c1") == [1, 1, 1, 1, 1, 7, 8, 9]

    async def test_record_offsets_round_trip(self, store: ConversationStore) -> None:
        assert (await store.open_turn(replace(turn(), prompt_offset=41), [1] * 5)) is ApplyStatus.OK
        state = await store.load("c1")
        assert state is not None and (state.prompt_offset, state.chunk_offset) == (41, -1)
        update = replace(upd(1), chunk_offset=97)
        assert await store.apply_chunk("c1", "m1", epoch=1, seq=0, new_ids=[7], update=update) is ApplyStatus.OK
        state = await store.load("c1")
        assert state is not None and (state.prompt_offset, state.chunk_offset) == (41, 97)

    async def test_stale_message_refused(self, store: ConversationStore) -> None:
        await store.open_turn(turn(), [1] * 5)
        status = await store.apply_chunk("c1", "old", epoch=1, seq=0, new_ids=[7], update=upd(1))
        assert status is ApplyStatus.STALE_MESSAGE
        assert await store.read_log("c1") == [1] * 5

    async def test_epoch_fencing(self, store: ConversationStore) -> None:
        await store.open_turn(turn(epoch=1), [1] * 5)
        # A new owner (epoch 2) writes; the old owner (epoch 1) is then refused.
        assert await store.apply_chunk("c1", "m1", epoch=2, seq=0, new_ids=[7], update=upd(1)) is ApplyStatus.OK
        assert await store.apply_chunk("c1", "m1", epoch=1, seq=1, new_ids=[8], update=upd(2)) is ApplyStatus.FENCED
        assert await store.open_turn(turn(mid="m2", epoch=1, prompt=1), [3]) is ApplyStatus.FENCED
        state = await store.load("c1")
        assert state is not None and (state.epoch, state.next_seq, state.message_id) == (2, 1, "m1")

    async def test_large_token_ids_survive(self, store: ConversationStore) -> None:
        ids = [0, 151645, 151643, (1 << 31) - 1]
        await store.open_turn(turn(prompt=4), ids)
        assert await store.read_log("c1") == ids

    async def test_bump_epoch_is_monotonic(self, store: ConversationStore) -> None:
        a = await store.bump_epoch(3)
        b = await store.bump_epoch(3)
        assert b == a + 1

    async def test_concurrent_duplicates_apply_once(self, store: ConversationStore) -> None:
        await store.open_turn(turn(), [1] * 5)
        results = await asyncio.gather(
            *(store.apply_chunk("c1", "m1", epoch=1, seq=0, new_ids=[7], update=upd(1)) for _ in range(8))
        )
        assert sorted(results) == sorted([ApplyStatus.OK] + [ApplyStatus.DUPLICATE] * 7)
        assert await store.read_log("c1") == [1] * 5 + [7]

    async def test_log_len_must_match(self, store: ConversationStore) -> None:
        with pytest.raises(ValueError, match="log_len"):
            await store.open_turn(turn(prompt=2), [1, 2, 3])
