"""The response tokens of an archived answer, numbered as the worker numbered them.

A verdict's ``token_start``/``token_end`` and ``flagged_token`` index the answer's tokens in the
guard tokenizer's ids. The archive holds what the producer sent (text deltas or token ids), so an
audit re-tokenises it the way the moderator does: text deltas through ``IncrementalTokenizer``
(whose ids equal tokenising the whole answer at once), token ids as they are, and after the final
chunk the chat format's end-of-answer ids, which the guard judges too. The chat-template scaffold
before the answer is not a response token. Loading a tokenizer imports transformers, so this
module is imported only when token texts are asked for.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from topics.events import TokenChunkEvent
from workers.engine.text import IncrementalTokenizer

if TYPE_CHECKING:
    from workers.engine.template import ChatFormat
    from workers.settings import Settings


def response_token_ids(chat_format: ChatFormat, chunks: Sequence[TokenChunkEvent]) -> list[int]:
    """The response-token ids of ``chunks`` (one message's, ``seq`` 0, 1, ... without gaps)."""
    tokenizer = IncrementalTokenizer(chat_format)
    ids: list[int] = []
    for chunk in chunks:
        if chunk.text is not None:
            ids += tokenizer.feed(chunk.text)
        else:  # ids after text deltas: the held-back text comes first, as in the moderator
            ids += tokenizer.finish() + list(chunk.token_ids or ())
        if chunk.final:
            ids += tokenizer.finish() + list(chat_format.response_suffix)
    return ids


class ChatFormatTokens:
    """``TokenTexts`` with one chat format: the text of each response token, decoded alone."""

    def __init__(self, chat_format: ChatFormat) -> None:
        self._chat_format = chat_format

    def __call__(self, chunks: Sequence[TokenChunkEvent]) -> list[str]:
        tokenizer = self._chat_format.tokenizer
        return [str(tokenizer.decode([token])) for token in response_token_ids(self._chat_format, chunks)]


def checkpoint_chat_format(settings: Settings, checkpoint: str) -> ChatFormat:
    """The chat format (tokenizer) of ``checkpoint``, named as ``guard.checkpoint`` names one; no
    weights are loaded, and a test checkpoint's tokenizer is as good as any for reading text."""
    from workers.backends.stream import StreamBackend

    guard = settings.guard.model_copy(update={"checkpoint": checkpoint, "allow_test_checkpoint": True})
    return StreamBackend(settings.model_copy(update={"guard": guard})).chat_format
