"""The cascade: the prefilter judges each prompt first, the stream guard judges the rest.

A prompt the prefilter is confident about (``PromptScores.decided``: confidently unsafe, or
confidently safe) is decided there and its scores carry ``tier="prefilter"``; every other prompt is
scored by the stream guard and carries ``tier="stream"``. Responses, cache release, the chat format
and the model info are the stream guard's.

The prefilter's category indices are translated into the stream guard's query categories by name,
so a verdict names the right category whichever tier decided it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from typing import TYPE_CHECKING

from workers.backends.base import (
    GuardBackend,
    ModelInfo,
    PromptRequest,
    PromptScores,
    ResponseRequest,
    ResponseScores,
)
from workers.guards.taxonomy import canonical_category

if TYPE_CHECKING:
    from workers.engine.template import ChatFormat

logger = logging.getLogger(__name__)


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

    @property
    def info(self) -> ModelInfo:
        return self._stream.info

    @property
    def chat_format(self) -> ChatFormat:
        return self._stream.chat_format

    async def start(self) -> None:
        # One after the other: both load models in worker threads, and transformers' lazy module
        # imports are not thread-safe (concurrent first imports fail with ImportError).
        await self._stream.start()
        await self._prefilter.start()
        self._categories = category_translation(self._prefilter.info, self._stream.info)

    async def close(self) -> None:
        results = await asyncio.gather(self._prefilter.close(), self._stream.close(), return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            raise errors[0]

    async def score_prompt(self, request: PromptRequest) -> PromptScores:
        if self._categories is None:
            raise RuntimeError("CascadeBackend.start() must be awaited before scoring")
        first = await self._prefilter.score_prompt(request)
        if first.decided:
            return dataclasses.replace(first, category=self._categories[first.category], tier="prefilter")
        second = await self._stream.score_prompt(request)
        return dataclasses.replace(second, tier="stream")

    async def score_response(self, request: ResponseRequest) -> ResponseScores:
        return await self._stream.score_response(request)

    def release(self, key: str) -> None:
        self._stream.release(key)
