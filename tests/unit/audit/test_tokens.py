"""An archived answer re-tokenised as the worker numbered its tokens."""

from __future__ import annotations

from tests.fakes import qwen3_chat_format
from tests.unit.audit.archive import chunk
from topics.events import TokenChunkEvent
from workers.audit.tokens import ChatFormatTokens, response_token_ids


def test_text_deltas_give_the_ids_of_the_whole_answer_and_its_end() -> None:
    chat = qwen3_chat_format()
    answer = "Once upon a time, a villager decided to DETONATE it."
    pieces = [answer[i : i + 7] for i in range(0, len(answer), 7)]  # cut inside words
    chunks = [chunk(seq, piece) for seq, piece in enumerate(pieces)] + [chunk(len(pieces), None, final=True)]

    ids = response_token_ids(chat, chunks)

    whole = chat.tokenizer.encode(answer, add_special_tokens=False)
    assert ids == [*whole, *chat.response_suffix]
    assert response_token_ids(chat, chunks[:-1]) != ids[: len(whole)]  # the tail is held back until the end


def test_token_ids_follow_the_text_before_them() -> None:
    chat = qwen3_chat_format()
    ids_chunk = TokenChunkEvent(conversation_id="c", message_id="m1", seq=1, token_ids=(11, 12))

    ids = response_token_ids(chat, [chunk(0, "Hello there"), ids_chunk])

    assert ids == [*chat.tokenizer.encode("Hello there", add_special_tokens=False), 11, 12]


def test_each_token_reads_as_its_own_text() -> None:
    chat = qwen3_chat_format()
    texts = ChatFormatTokens(chat)([chunk(0, "a cat sat "), chunk(1, "down", final=True)])
    assert "".join(texts[: -len(chat.response_suffix)]) == "a cat sat down"
    assert texts[1] == " cat"
