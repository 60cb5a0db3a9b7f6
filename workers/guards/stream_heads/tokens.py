"""Streamed examples as token ids under a chat format, with per-token training targets.

The judged sequence is built exactly the way a worker builds it from a stream::

    render_prompt([user]) + response_prefix + encode_text(answer) + response_suffix

Response position ``i`` is the ``i``-th answer token (the scaffold is context, never scored); the
suffix (the end-of-turn token onward) is scored last, when the answer is complete. Character
offsets of ``StreamedResponse`` become token indices through the tokenizer's offsets: the first
harmful token is the first token holding a harmful character.

Per-token targets (``response_targets``): Safe before the first harmful token, Unsafe from it on
through the suffix ("latched", as Qwen3Guard's own rollout labels are). Controversial is never a
response target: no response set grades answers between harmless and harmful.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from topics.events import Message, Role
from workers.guards.stream_heads.labels import SAFE, UNSAFE
from workers.guards.stream_heads.streams import StreamedResponse

if TYPE_CHECKING:
    from workers.engine.template import ChatFormat

CLIP_MARK = "\n...\n"


@dataclass(frozen=True, slots=True)
class TokenizedResponse:
    """A streamed example as ids.

    Attributes:
        prompt_ids: the rendered prompt through the user's end-of-turn token.
        content_ids: the answer's ids (possibly truncated).
        suffix_ids: the response suffix, empty when the answer was truncated (still streaming).
        harmful_from: index in ``content_ids`` of the first harmful token; None when the answer is
            safe or its harmful part was truncated away.
        sentence_end: index in ``content_ids`` of the last token of the first harmful sentence.
    """

    example: StreamedResponse
    prompt_ids: tuple[int, ...]
    content_ids: tuple[int, ...]
    suffix_ids: tuple[int, ...]
    harmful_from: int | None
    sentence_end: int | None

    @property
    def scored(self) -> int:
        """How many positions the response head scores: the answer and the suffix."""
        return len(self.content_ids) + len(self.suffix_ids)


def encode_with_offsets(chat: ChatFormat, text: str) -> tuple[list[int], list[tuple[int, int]]]:
    """``chat.encode_text(text)`` together with each token's character span."""
    encoding = chat.tokenizer.backend_tokenizer.encode(text, add_special_tokens=False)
    return list(encoding.ids), [(int(a), int(b)) for a, b in encoding.offsets]


def token_at(offsets: Sequence[tuple[int, int]], char: int) -> int:
    """Index of the first token whose span ends after ``char`` (``len(offsets)`` if none)."""
    return next((i for i, (_, end) in enumerate(offsets) if end > char), len(offsets))


def clip_text(chat: ChatFormat, text: str, max_tokens: int) -> str:
    """``text`` if it has at most ``max_tokens`` tokens, else its head and tail around a mark.

    Harmful requests sit at either end of a long prompt (a jailbreak template wraps them), so both
    ends are kept rather than one.
    """
    ids = chat.encode_text(text)
    if len(ids) <= max_tokens:
        return text
    head = max(1, max_tokens // 2)
    tail = max(1, max_tokens - head - len(chat.encode_text(CLIP_MARK)))
    return str(chat.tokenizer.decode(ids[:head])) + CLIP_MARK + str(chat.tokenizer.decode(ids[-tail:]))


def render_user_prompt(chat: ChatFormat, prompt: str, max_tokens: int | None = None) -> list[int]:
    """The rendered one-turn prompt; the user text is clipped so the rendering fits ``max_tokens``."""
    ids = chat.render_prompt((Message(role=Role.USER, content=prompt),))
    if max_tokens is None or len(ids) <= max_tokens:
        return ids
    overhead = len(ids) - len(chat.encode_text(prompt))
    clipped = clip_text(chat, prompt, max(8, max_tokens - overhead - 8))
    return chat.render_prompt((Message(role=Role.USER, content=clipped),))


def tokenize_response(
    chat: ChatFormat,
    example: StreamedResponse,
    *,
    prompt_ids: Sequence[int] | None = None,
    max_response_tokens: int | None = None,
) -> TokenizedResponse:
    """``example`` as the ids a worker judges; the answer is cut after ``max_response_tokens``.

    ``prompt_ids`` is the rendered prompt when the caller has it already (e.g. clipped by
    ``render_user_prompt``); by default the whole prompt is rendered.
    """
    if prompt_ids is None:
        prompt_ids = render_user_prompt(chat, example.prompt)
    ids, offsets = encode_with_offsets(chat, example.text)
    truncated = max_response_tokens is not None and len(ids) > max_response_tokens
    if truncated:
        ids, offsets = ids[:max_response_tokens], offsets[:max_response_tokens]
    harmful_from = sentence_end = None
    if example.harmful_from is not None:
        first = token_at(offsets, example.harmful_from)
        if first < len(ids):
            harmful_from = first
            end_char = example.sentence_end if example.sentence_end is not None else len(example.text)
            sentence_end = max(first, min(token_at(offsets, end_char - 1), len(ids) - 1))
    return TokenizedResponse(
        example=example,
        prompt_ids=tuple(prompt_ids),
        content_ids=tuple(ids),
        suffix_ids=() if truncated else tuple(chat.response_suffix),
        harmful_from=harmful_from,
        sentence_end=sentence_end,
    )


def response_targets(tokens: TokenizedResponse) -> list[int]:
    """Risk target of every scored position (answer, then suffix): the latched scheme."""
    start = tokens.scored if tokens.harmful_from is None else tokens.harmful_from
    return [SAFE if i < start else UNSAFE for i in range(tokens.scored)]
