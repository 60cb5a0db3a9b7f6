"""Deterministic test doubles for unit tests (never used outside tests/unit)."""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence

import numpy as np

from workers.backends.base import ModelInfo, PromptRequest, PromptScores, ResponseRequest, ResponseScores
from workers.engine.template import ChatFormat, packaged_qwen3_tokenizer_dir

SAFE = np.array([1.0, 0.0, 0.0], dtype=np.float32)
CONTROVERSIAL = np.array([0.1, 0.8, 0.1], dtype=np.float32)
UNSAFE = np.array([0.05, 0.05, 0.9], dtype=np.float32)


@functools.cache
def qwen3_chat_format() -> ChatFormat:
    return ChatFormat.from_pretrained(packaged_qwen3_tokenizer_dir())


class FakeBackend:
    """Scores tokens by spelling: tokens of "BAD" words are unsafe, of "MEH" words controversial.

    Records every request, and checks the position bookkeeping a real engine relies on: a
    response request's ``offset`` must equal the number of ids it has seen for that key, else it
    fetches ``history`` (as the engine does after an eviction) and checks its length.
    """

    def __init__(self) -> None:
        self.chat = qwen3_chat_format()
        tok = self.chat.tokenizer
        self.unsafe_ids = {i for w in (" BAD", "BAD") for i in tok.encode(w, add_special_tokens=False)}
        self.contro_ids = {i for w in (" MEH", "MEH") for i in tok.encode(w, add_special_tokens=False)}
        self.seen: dict[str, int] = {}
        self.history_calls = 0
        self.released: list[str] = []
        self.prompts: list[PromptRequest] = []
        self.responses: list[ResponseRequest] = []

    @property
    def info(self) -> ModelInfo:
        return ModelInfo(
            model_id="fake",
            revision="0",
            tier="stream",
            query_categories=("Violent", "Jailbreak"),
            response_categories=("Violent", "Unethical Acts"),
        )

    @property
    def chat_format(self) -> ChatFormat:
        return self.chat

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass

    def _rows(self, ids: Sequence[int]) -> np.ndarray:
        return (
            np.stack([UNSAFE if i in self.unsafe_ids else CONTROVERSIAL if i in self.contro_ids else SAFE for i in ids])
            if ids
            else np.zeros((0, 3), dtype=np.float32)
        )

    async def score_prompt(self, request: PromptRequest) -> PromptScores:
        self.prompts.append(request)
        self.seen[request.key] = len(request.token_ids)
        rows = self._rows(request.token_ids)
        worst = max(range(len(rows)), key=lambda i: 1 - rows[i][0])
        return PromptScores(risk=rows[worst], category=0, category_prob=0.9, tier="stream")

    async def score_response(self, request: ResponseRequest) -> ResponseScores:
        self.responses.append(request)
        if self.seen.get(request.key) != request.offset:
            self.history_calls += 1
            history = await request.history()
            assert len(history) == request.offset, (len(history), request.offset)
        self.seen[request.key] = request.offset + len(request.new_ids)
        rows = self._rows(request.new_ids)
        cats = np.array([0 if i in self.unsafe_ids else 1 for i in request.new_ids], dtype=np.int64)
        return ResponseScores(risk=rows, category=cats, category_prob=np.full(len(cats), 0.9, dtype=np.float32))

    def engine_stats(self) -> Mapping[str, float]:
        return {}

    def unavailable(self) -> str | None:
        return None

    def release(self, key: str) -> None:
        self.released.append(key)
        self.seen.pop(key, None)
