"""Fakes for the guard tests: a hashing sentence encoder, a scripted scorer, a scripted guard."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, cast

import numpy as np
import numpy.typing as npt

from topics.events import Message
from workers.backends.base import (
    ModelInfo,
    PromptRequest,
    PromptScores,
    ResponseRequest,
    ResponseScores,
)
from workers.backends.prefilter_model import TextScores
from workers.backends.taxonomy import QUERY_CATEGORIES

if TYPE_CHECKING:
    from workers.engine.template import ChatFormat


class HashingEncoder:
    """Deterministic bag-of-hashed-words embeddings: learnable, instant, no model files."""

    def __init__(self, name: str = "default", *, device: str = "cpu", dtype: str = "bfloat16") -> None:
        self.name = "fake-hashing-encoder"
        self.dtype = dtype
        self.dim = 32

    def embed(self, texts: Sequence[str], *, batch_size: int = 16) -> npt.NDArray[np.float32]:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in text.casefold().split():
                bucket = int.from_bytes(hashlib.blake2b(word.encode(), digest_size=4).digest(), "big")
                out[row, bucket % self.dim] += 1.0
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        normalised: npt.NDArray[np.float32] = (out / np.maximum(norms, 1e-6)).astype(np.float32)
        return normalised

    def probe(self) -> list[float]:
        return [round(float(x), 4) for x in self.embed(["probe sentence"])[0, :8]]


class ScriptedScorer:
    """Returns fixed risk rows by text and records every batch it was asked to score."""

    def __init__(self, rows: dict[str, tuple[float, float, float]], category: int = 0) -> None:
        self.rows = rows
        self.category = category
        self.batches: list[list[str]] = []

    def score(self, texts: Sequence[str]) -> TextScores:
        self.batches.append(list(texts))
        risk = np.array([self.rows[t] for t in texts], dtype=np.float32)
        n = len(texts)
        return TextScores(
            risk=risk,
            category=np.full(n, self.category, dtype=np.int64),
            category_prob=np.full(n, 0.9, dtype=np.float32),
        )


class FakeChat:
    """Renders a conversation's last user message as its code points plus an end-of-turn id."""

    END_OF_TURN = 1_000_000

    def render_prompt(self, messages: Sequence[Message]) -> list[int]:
        return [*map(ord, messages[-1].content), self.END_OF_TURN]


@dataclass
class ScriptedGuard:
    """A GuardBackend answering prompts from a table (RISK_ORDER rows); records what it saw."""

    rows: dict[str, tuple[float, float, float]]
    categories: tuple[str, ...] = QUERY_CATEGORIES
    category: int = 0
    tier: str = "stream"
    decided: bool = True
    seen: list[str] = field(default_factory=list)
    released: list[str] = field(default_factory=list)
    responses: list[ResponseRequest] = field(default_factory=list)
    started: bool = False
    closed: bool = False
    down: str | None = None  # what ``unavailable`` answers
    token_ids: list[tuple[int, ...]] = field(default_factory=list)
    chat: FakeChat = field(default_factory=FakeChat)

    @property
    def info(self) -> ModelInfo:
        return ModelInfo(
            model_id=f"scripted-{self.tier}",
            revision="0",
            tier=self.tier,
            query_categories=self.categories,
            response_categories=self.categories[:8],
        )

    @property
    def chat_format(self) -> ChatFormat:
        return cast("ChatFormat", self.chat)  # duck-typed: the harness only calls render_prompt

    async def start(self) -> None:
        self.started = True

    async def close(self) -> None:
        self.closed = True

    async def score_prompt(self, request: PromptRequest) -> PromptScores:
        self.seen.append(request.text)
        self.token_ids.append(tuple(request.token_ids))
        return PromptScores(
            risk=np.array(self.rows[request.text], dtype=np.float32),
            category=self.category,
            category_prob=0.8,
            tier=self.tier,
            decided=self.decided,
        )

    async def score_response(self, request: ResponseRequest) -> ResponseScores:
        self.responses.append(request)
        k = len(request.new_ids)
        return ResponseScores(
            risk=np.tile(np.array([1.0, 0.0, 0.0], dtype=np.float32), (k, 1)),
            category=np.zeros(k, dtype=np.int64),
            category_prob=np.ones(k, dtype=np.float32),
        )

    def release(self, key: str) -> None:
        self.released.append(key)

    def engine_stats(self) -> dict[str, float]:
        return {}

    def unavailable(self) -> str | None:
        return self.down
