"""The KV page table: which pool pages hold which conversation, under a byte budget.

The pool is ``num_pages`` pages of ``page_size`` token slots per layer (the tensors live in
``attention.KVStorage``; this module is pure Python). Token ``p`` of a conversation lives in slot
``pages[p // page_size] * page_size + p % page_size``. When a reservation needs more pages than are
free, the least-recently-active conversations that are not protected (not in the forward being
planned) are evicted; the scheduler rebuilds them from their token history on their next chunk.

Only the scheduler's event-loop thread mutates the table; forwards read page lists snapshotted in
their plan, so a forward never sees the table change under it.
"""

from __future__ import annotations

import logging
from array import array
from collections import OrderedDict
from collections.abc import Iterable, Set
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from transformers import PretrainedConfig

logger = logging.getLogger(__name__)


class KVBudgetError(RuntimeError):
    """The KV budget cannot hold what was asked, even after evicting everything evictable."""


@dataclass(frozen=True, slots=True)
class KVLayout:
    """Shape of the KV cache of one backbone, and the derived byte sizes."""

    layers: int
    kv_heads: int
    head_dim: int
    dtype_bytes: int
    page_size: int

    @classmethod
    def from_config(cls, config: PretrainedConfig, *, dtype_bytes: int, page_size: int) -> KVLayout:
        heads = int(config.num_attention_heads)
        head_dim = getattr(config, "head_dim", None) or int(config.hidden_size) // heads
        kv_heads = getattr(config, "num_key_value_heads", None) or heads
        return cls(int(config.num_hidden_layers), int(kv_heads), int(head_dim), dtype_bytes, page_size)

    @property
    def bytes_per_token(self) -> int:
        """Keys and values of one token over all layers."""
        return 2 * self.layers * self.kv_heads * self.head_dim * self.dtype_bytes

    @property
    def bytes_per_page(self) -> int:
        return self.bytes_per_token * self.page_size

    def pages_for(self, tokens: int) -> int:
        return -(-tokens // self.page_size)

    def pages_in(self, budget_bytes: int) -> int:
        """How many pages ``budget_bytes`` holds."""
        return budget_bytes // self.bytes_per_page


@dataclass(slots=True)
class ConversationKV:
    """One conversation's cached state: its pages and the ids of the tokens they hold."""

    key: str
    pages: list[int] = field(default_factory=list)
    ids: array[int] = field(default_factory=lambda: array("l"))
    at_prompt_end: bool = False
    """True while the cache ends exactly at a prompt's end-of-turn token (no response fed yet)."""

    @property
    def length(self) -> int:
        return len(self.ids)


@dataclass(slots=True)
class PoolStats:
    """Counters for metrics and benchmarks."""

    evictions: int = 0
    evicted_tokens: int = 0
    peak_pages: int = 0


class KVPool:
    """Page allocation with a byte budget and least-recently-active eviction."""

    def __init__(self, layout: KVLayout, budget_bytes: int) -> None:
        self.layout = layout
        self.num_pages = layout.pages_in(budget_bytes)
        if self.num_pages < 1:
            raise KVBudgetError(
                f"KV budget of {budget_bytes} bytes holds no page of {layout.bytes_per_page} bytes "
                f"({layout.page_size} tokens x {layout.bytes_per_token} bytes)"
            )
        self._free: list[int] = list(range(self.num_pages - 1, -1, -1))
        self._high_water = 0  # pages below it have been handed out before
        self._fresh: list[int] = []
        self._conversations: OrderedDict[str, ConversationKV] = OrderedDict()
        self.stats = PoolStats()

    @property
    def capacity_tokens(self) -> int:
        return self.num_pages * self.layout.page_size

    @property
    def free_pages(self) -> int:
        return len(self._free)

    @property
    def used_pages(self) -> int:
        return self.num_pages - len(self._free)

    def __contains__(self, key: object) -> bool:
        return key in self._conversations

    def __len__(self) -> int:
        return len(self._conversations)

    def get(self, key: str) -> ConversationKV | None:
        return self._conversations.get(key)

    def keys(self) -> list[str]:
        """Conversation keys, least recently active first."""
        return list(self._conversations)

    def reserve(self, key: str, start: int, count: int, protected: Set[str]) -> tuple[int, ...]:
        """Make room for tokens ``start .. start+count`` of ``key`` and return its page list.

        ``start == 0`` (re)starts the conversation; otherwise its cached length must be ``start``.
        Evicts least-recently-active conversations outside ``protected`` when pages run short.

        Raises:
            KVBudgetError: not enough pages even after evicting every unprotected conversation
                (nothing is evicted then).
            ValueError: ``start`` does not match the cached length.
        """
        conversation = self._conversations.get(key)
        if start == 0:
            if conversation is not None:
                self._release_pages(conversation)
                conversation.ids = array("l")
            else:
                conversation = ConversationKV(key)
                self._conversations[key] = conversation
        elif conversation is None or conversation.length != start:
            have = None if conversation is None else conversation.length
            raise ValueError(f"conversation {key!r} holds {have} tokens, cannot continue at {start}")
        needed = self.layout.pages_for(start + count) - len(conversation.pages)
        if needed > len(self._free):
            try:
                self._evict_for(needed, protected | {key})
            except KVBudgetError:
                if conversation.length == 0:
                    self.drop(key)
                raise
        new_pages = [self._free.pop() for _ in range(needed)]
        for page in new_pages:
            if page >= self._high_water:
                self._fresh.append(page)
                self._high_water = page + 1
        conversation.pages.extend(new_pages)
        self._conversations.move_to_end(key)
        self.stats.peak_pages = max(self.stats.peak_pages, self.used_pages)
        return tuple(conversation.pages)

    def take_fresh_pages(self) -> tuple[int, ...]:
        """Pages handed out for the first time since the last call.

        Their memory was never written, so it may hold anything (NaN included); the forward that
        first uses them zeroes them, because attention multiplies masked-out values by zero and
        0 * NaN is NaN. Reused pages hold finite values from earlier writes.
        """
        fresh, self._fresh = tuple(self._fresh), []
        return fresh

    def commit(self, key: str, ids: Iterable[int], *, at_prompt_end: bool) -> None:
        """Record that tokens ``ids`` were written after the cached ones (a forward finished)."""
        conversation = self._conversations[key]
        conversation.ids.extend(ids)
        conversation.at_prompt_end = at_prompt_end
        if self.layout.pages_for(conversation.length) > len(conversation.pages):
            raise AssertionError(f"conversation {key!r} outgrew its reserved pages")

    def truncate(self, key: str, length: int) -> None:
        """Forget tokens from ``length`` on (a chunk is being re-scored), freeing whole pages."""
        conversation = self._conversations[key]
        del conversation.ids[length:]
        keep = self.layout.pages_for(length)
        self._free.extend(reversed(conversation.pages[keep:]))
        del conversation.pages[keep:]
        conversation.at_prompt_end = False

    def drop(self, key: str) -> None:
        """Forget ``key`` entirely; unknown keys are ignored."""
        conversation = self._conversations.pop(key, None)
        if conversation is not None:
            self._release_pages(conversation)

    def clear(self) -> None:
        """Forget every conversation."""
        for key in list(self._conversations):
            self.drop(key)

    def _release_pages(self, conversation: ConversationKV) -> None:
        self._free.extend(reversed(conversation.pages))
        conversation.pages = []

    def _evict_for(self, needed: int, protected: Set[str]) -> None:
        evictable = [c for key, c in self._conversations.items() if key not in protected]
        available = len(self._free) + sum(len(c.pages) for c in evictable)
        if available < needed:
            raise KVBudgetError(
                f"KV budget holds {self.capacity_tokens} tokens in {self.num_pages} pages; "
                f"{needed} more pages are needed but only {available} can be freed"
            )
        for conversation in evictable:
            if len(self._free) >= needed:
                break
            logger.debug("evicting %s (%d tokens)", conversation.key, conversation.length)
            self.stats.evictions += 1
            self.stats.evicted_tokens += conversation.length
            self.drop(conversation.key)
