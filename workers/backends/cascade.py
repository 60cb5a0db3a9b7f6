"""The cascade: the prefilter judges each prompt first, the stream guard judges the rest.

A prompt the prefilter is confident about (``PromptScores.decided``: confidently unsafe, or
confidently safe) is decided there and its scores carry ``tier="prefilter"``; every other prompt is
scored by the stream guard and carries ``tier="stream"``. Responses, cache release, the chat format
and the model info are the stream guard's.

The prefilter's category indices are translated into the stream guard's query categories by name,
so a verdict names the right category whichever tier decided it.

A prompt the prefilter allows is still fed to the stream guard, in the background, once its
verdict is returned: the stream guard judges the answer in the context of the prompt, so its cache
must hold the prompt before the first chunk comes. Priming it while the LLM starts generating
keeps that prefill off both the prompt verdict (which returns at the prefilter's speed) and the
first chunk's verdict (which would otherwise rebuild the prompt from the Redis log). A prompt the
prefilter blocks is not primed: its answer is cut off before it starts.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING

from topics.events import Risk
from workers.backends.base import (
    RISK_ORDER,
    GuardBackend,
    ModelInfo,
    PromptRequest,
    PromptScores,
    ResponseRequest,
    ResponseScores,
)
from workers.backends.taxonomy import canonical_category

if TYPE_CHECKING:
    from workers.engine.template import ChatFormat

logger = logging.getLogger(__name__)


def is_allowed(scores: PromptScores) -> bool:
    """Whether a decided prefilter verdict lets the prompt through (Safe is its most likely class)."""
    return int(scores.risk.argmax()) == RISK_ORDER.index(Risk.SAFE)


def category_translation(prefilter: ModelInfo, stream: ModelInfo) -> tuple[int, ...]:
    """Index in ``stream.query_categories`` of each of ``prefilter.query_categories``.

    Raises:
        ValueError: a prefilter category has no counterpart in the stream guard's query head.
    """
    stream_index = {canonical_category(name): i for i, name in enumerate(stream.query_categories)}
    missing = [name for name in prefilter.query_categories if canonical_category(name) not in stream_index]
    if missing:
        raise ValueError(
            f"the stream guard {stream.model_id} lacks the query categories {missing} the prefilter predicts"
        )
    return tuple(stream_index[canonical_category(name)] for name in prefilter.query_categories)


class CascadeBackend:
    """Prefilter first, stream guard for whatever the prefilter does not decide."""

    def __init__(self, prefilter: GuardBackend, stream: GuardBackend) -> None:
        self._prefilter = prefilter
        self._stream = stream
        self._categories: tuple[int, ...] | None = None
        self._priming: set[asyncio.Task[PromptScores]] = set()

    @property
    def info(self) -> ModelInfo:
        return self._stream.info

    @property
    def chat_format(self) -> ChatFormat:
        return self._stream.chat_format

    async def start(self) -> None:
        # Together: the stream guard's model loads in its engine process while the prefilter loads
        # here (loads in this process's threads take turns: ``workers.engine.loading``).
        results = await asyncio.gather(self._stream.start(), self._prefilter.start(), return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            raise errors[0]
        self._categories = category_translation(self._prefilter.info, self._stream.info)

    async def close(self) -> None:
        for task in list(self._priming):
            task.cancel()
        await asyncio.gather(*self._priming, return_exceptions=True)
        results = await asyncio.gather(self._prefilter.close(), self._stream.close(), return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            raise errors[0]

    async def score_prompt(self, request: PromptRequest) -> PromptScores:
        if self._categories is None:
            raise RuntimeError("CascadeBackend.start() must be awaited before scoring")
        first = await self._prefilter.score_prompt(request)
        if first.decided:
            if is_allowed(first):
                self._prime(request)
            return dataclasses.replace(first, category=self._categories[first.category], tier="prefilter")
        second = await self._stream.score_prompt(request)
        return dataclasses.replace(second, tier="stream")

    def _prime(self, request: PromptRequest) -> None:
        """Feed ``request`` to the stream guard in the background; its scores are not used."""
        task = asyncio.create_task(self._stream.score_prompt(request), name=f"prime-{request.key}")
        self._priming.add(task)
        task.add_done_callback(self._primed)

    def _primed(self, task: asyncio.Task[PromptScores]) -> None:
        self._priming.discard(task)
        if not task.cancelled() and task.exception() is not None:
            # Not fatal: the first chunk rebuilds the prompt from the Redis token log instead.
            logger.warning("priming the stream guard with a prompt failed: %r", task.exception())

    async def score_response(self, request: ResponseRequest) -> ResponseScores:
        return await self._stream.score_response(request)

    def release(self, key: str) -> None:
        self._stream.release(key)

    def unavailable(self) -> str | None:
        return self._stream.unavailable() or self._prefilter.unavailable()

    def engine_stats(self) -> Mapping[str, float]:
        return self._stream.engine_stats()
