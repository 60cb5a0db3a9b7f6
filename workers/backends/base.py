"""The guard backend seam: what the worker asks of any guard model.

A backend scores token ids; the worker owns everything around it (Redis state, debounce, policy,
verdict events). Scores are probabilities in the canonical order ``RISK_ORDER`` whatever order the
checkpoint's label map uses. Implementations: ``backends.stream`` (Qwen3Guard-Stream checkpoints
through ``workers.engine``), ``backends.prefilter`` (embedding classifier, prompts only),
``backends.cascade`` (prefilter, then stream), and a deterministic fake in the tests.

Sequence positions: a conversation turn is one token sequence, the rendered prompt (through the
user's end-of-turn token) followed by the response scaffold and the response tokens. Requests name
positions in that sequence, so a backend that lost its cache can rebuild it from ``history``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from topics.events import Risk

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    from workers.engine.template import ChatFormat

RISK_ORDER: tuple[Risk, Risk, Risk] = (Risk.SAFE, Risk.CONTROVERSIAL, Risk.UNSAFE)
"""Column order of every probability array a backend returns."""


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """What a verdict reports about the model that produced it."""

    model_id: str
    revision: str
    tier: str
    query_categories: tuple[str, ...]
    response_categories: tuple[str, ...]
    is_test_checkpoint: bool = False


@dataclass(frozen=True, slots=True)
class PromptRequest:
    """Judge the last user turn. ``token_ids`` is the rendered prompt through its end-of-turn token."""

    key: str
    token_ids: Sequence[int]
    text: str


@dataclass(frozen=True, slots=True)
class PromptScores:
    """Query-head output at the user's end-of-turn token (or the prefilter's)."""

    risk: npt.NDArray[np.float32]  # shape [3], RISK_ORDER
    category: int  # index into ModelInfo.query_categories
    category_prob: float
    tier: str
    decided: bool = True  # False when a cascade tier defers to the next one


@dataclass(frozen=True, slots=True)
class ResponseRequest:
    """Score ``new_ids``, which sit at positions ``offset .. offset+len(new_ids)`` of the sequence.

    ``history`` returns the ids at positions ``0 .. offset`` (from the Redis token log); a backend
    calls it only when it has no cached state for ``key`` at exactly ``offset``.
    """

    key: str
    offset: int
    new_ids: Sequence[int]
    history: Callable[[], Awaitable[Sequence[int]]]


@dataclass(frozen=True, slots=True)
class ResponseScores:
    """Response-head output for each new token."""

    risk: npt.NDArray[np.float32]  # shape [k, 3], RISK_ORDER
    category: npt.NDArray[np.int64]  # shape [k], index into ModelInfo.response_categories
    category_prob: npt.NDArray[np.float32]  # shape [k]


class GuardBackend(Protocol):
    """A guard model behind the worker. All methods are safe to call concurrently."""

    @property
    def info(self) -> ModelInfo: ...

    @property
    def chat_format(self) -> ChatFormat:
        """Renders prompts and response scaffolding with the checkpoint's tokenizer."""
        ...

    async def start(self) -> None:
        """Load weights and start the scheduler; idempotent."""

    async def close(self) -> None:
        """Stop the scheduler, failing pending requests, and free memory."""

    async def score_prompt(self, request: PromptRequest) -> PromptScores:
        """Score the prompt; also primes the cache of ``request.key`` for its response."""
        ...

    async def score_response(self, request: ResponseRequest) -> ResponseScores:
        """Score the next response tokens of ``request.key`` (k tokens cost O(k) when cached)."""
        ...

    def release(self, key: str) -> None:
        """Forget cached state of ``key`` (the message finished or was cut off)."""

    def unavailable(self) -> str | None:
        """Why the guard cannot judge now (its engine died, or is restarting), or None when it can;
        ``GET /healthz`` reports it. Asked after ``start``."""
        ...

    def engine_stats(self) -> Mapping[str, float]:
        """The engine's counters for metrics, empty when there is no engine: forwards, rows, tokens,
        forward_seconds, rebuilds, kv_evictions (keys of ``workers.metrics.RUNTIME_SERIES``, which
        documents them), cumulative since start, and kv_bytes_used (the KV cache bytes held now)."""
        ...
