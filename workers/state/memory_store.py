"""An in-memory ``ConversationStore`` with the Redis store's exact semantics, for unit tests."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import replace

from workers.state.base import ApplyStatus, ChunkUpdate, TurnState


class MemoryStore:
    """Dict-backed store; expiry is checked lazily against a monotonic clock."""

    def __init__(self, *, ttl_s: float = 3600.0, finished_ttl_s: float | None = None) -> None:
        self._ttl = ttl_s
        self._finished_ttl = finished_ttl_s if finished_ttl_s is not None else ttl_s
        self._turns: dict[str, tuple[TurnState, list[int], float]] = {}
        self._epochs: dict[int, int] = {}

    def _get(self, conversation_id: str) -> tuple[TurnState, list[int], float] | None:
        entry = self._turns.get(conversation_id)
        if entry is not None and entry[2] < time.monotonic():
            del self._turns[conversation_id]
            return None
        return entry

    async def load(self, conversation_id: str) -> TurnState | None:
        entry = self._get(conversation_id)
        return entry[0] if entry else None

    async def open_turn(self, state: TurnState, prompt_ids: Sequence[int]) -> ApplyStatus:
        if state.log_len != len(prompt_ids):
            raise ValueError(f"log_len {state.log_len} != {len(prompt_ids)} prompt ids")
        entry = self._get(state.conversation_id)
        if entry is not None:
            if entry[0].message_id == state.message_id:
                return ApplyStatus.DUPLICATE
            if entry[0].epoch > state.epoch:
                return ApplyStatus.FENCED
        self._turns[state.conversation_id] = (state, list(prompt_ids), time.monotonic() + self._ttl)
        return ApplyStatus.OK

    async def apply_chunk(
        self,
        conversation_id: str,
        message_id: str,
        *,
        epoch: int,
        seq: int,
        new_ids: Sequence[int],
        update: ChunkUpdate,
        last_seq: int | None = None,
    ) -> ApplyStatus:
        last = seq if last_seq is None else last_seq
        if last < seq:
            raise ValueError(f"last_seq {last} is below seq {seq}")
        entry = self._get(conversation_id)
        if entry is None:
            return ApplyStatus.MISSING
        state, log, _ = entry
        if state.message_id != message_id:
            return ApplyStatus.STALE_MESSAGE
        if state.epoch > epoch:
            return ApplyStatus.FENCED
        if seq != state.next_seq:
            return ApplyStatus.DUPLICATE if seq < state.next_seq else ApplyStatus.GAP
        log = [*log, *new_ids]
        state = replace(
            state,
            next_seq=last + 1,
            epoch=epoch,
            log_len=len(log),
            response_tokens=update.response_tokens,
            tokenizer_state=update.tokenizer_state,
            carry=update.carry,
            cutoff=update.cutoff,
            final=update.final,
            chunk_offset=update.chunk_offset,
        )
        ttl = self._finished_ttl if update.final or update.cutoff else self._ttl
        self._turns[conversation_id] = (state, log, time.monotonic() + ttl)
        return ApplyStatus.OK

    async def read_log(self, conversation_id: str, end: int | None = None) -> list[int]:
        entry = self._get(conversation_id)
        if entry is None:
            return []
        return entry[1][:end] if end is not None else list(entry[1])

    async def bump_epoch(self, partition: int) -> int:
        self._epochs[partition] = self._epochs.get(partition, 0) + 1
        return self._epochs[partition]

    async def aclose(self) -> None:
        self._turns.clear()
