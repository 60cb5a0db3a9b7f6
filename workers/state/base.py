"""The state store seam: what a worker persists about each conversation's current turn.

One record per conversation holds the turn being moderated (``message_id``) and everything a
worker needs to resume it after a rebalance, a crash or a cache eviction: the token log (rendered
prompt ids, response scaffold, response ids), the next expected chunk ``seq``, the re-tokeniser
and debounce carries (opaque JSON owned by the worker), the cut-off, and the owner ``epoch``.

Every mutation is atomic and fenced: a write carrying an epoch lower than the one stored on the
record is refused with ``FENCED`` (a worker that lost its partitions cannot overwrite the new
owner's progress). Every write refreshes the record's TTL.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol


class StoreUnavailable(ConnectionError):
    """The store could not be reached (connection refused or lost, timeout, still loading).

    A transport fault, not a verdict on the event: the worker keeps the event, waits and tries
    again (``Moderator.handle``); it never dead-letters it for this.
    """


class ApplyStatus(StrEnum):
    """Outcome of a state mutation."""

    OK = "ok"
    DUPLICATE = "duplicate"  # this prompt / chunk seq was already applied
    GAP = "gap"  # chunk seq is ahead of the next expected one
    STALE_MESSAGE = "stale_message"  # the record holds another message_id
    MISSING = "missing"  # no record: the prompt was never applied (or expired)
    FENCED = "fenced"  # a newer owner epoch has written this record


@dataclass(frozen=True, slots=True, kw_only=True)
class TurnState:
    """The persisted state of a conversation's current turn."""

    conversation_id: str
    message_id: str
    epoch: int
    policy: str
    prompt_len: int
    log_len: int
    next_seq: int = 0
    response_tokens: int = 0
    tokenizer_state: str = ""
    carry: str = ""
    cutoff: str = ""
    final: bool = False
    prompt_risk: str = ""
    prompt_action: str = ""
    prompt_offset: int = -1
    chunk_offset: int = -1
    """Kafka offsets of the turn's prompt record and of the newest chunk record applied to it, on the
    conversation's partition of each topic (the key decides it). A record at or below them that the
    worker sees again is a redelivery of work already done (its effects were published before the
    commit), not a second send by the producer."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ChunkUpdate:
    """What applying one chunk changes, besides appending its ids to the log."""

    response_tokens: int
    tokenizer_state: str
    carry: str
    cutoff: str
    final: bool
    chunk_offset: int = -1


class ConversationStore(Protocol):
    """Atomic, fenced, TTL'd per-conversation state. Implementations: Redis, in-memory.

    Every method raises ``StoreUnavailable`` when the store cannot be reached.
    """

    async def load(self, conversation_id: str) -> TurnState | None:
        """The current turn of the conversation, or None if there is none (never opened or expired)."""
        ...

    async def open_turn(self, state: TurnState, prompt_ids: Sequence[int]) -> ApplyStatus:
        """Start a new turn: the record is replaced by ``state`` and the log by ``prompt_ids``.

        Returns DUPLICATE (nothing changed) when the record already holds ``state.message_id``, FENCED
        when its epoch is above ``state.epoch``, else OK. ``state.log_len`` must equal
        ``len(prompt_ids)``.
        """
        ...

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
        """Apply chunks ``seq..last_seq`` (just ``seq`` by default) if and only if ``seq`` is the next
        one expected: a run of consecutive chunks is one atomic step.

        Appends ``new_ids`` (the run's ids, in order) to the log, stores ``update`` (the state after
        the run's last chunk), advances ``next_seq`` to ``last_seq + 1``.
        Returns MISSING / STALE_MESSAGE / FENCED / DUPLICATE (``seq`` below the next expected) /
        GAP (``seq`` above it) without changing anything, else OK.
        """
        ...

    async def read_log(self, conversation_id: str, end: int | None = None) -> list[int]:
        """Token ids ``[0, end)`` of the log (all of it when ``end`` is None)."""
        ...

    async def bump_epoch(self, partition: int) -> int:
        """Increment and return the owner epoch of a partition (called on assignment)."""
        ...

    async def aclose(self) -> None:
        """Release connections."""
