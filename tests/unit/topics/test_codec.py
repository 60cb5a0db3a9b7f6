"""The codec raises nothing but DecodeError, and quotes offending values in bounded form."""

from __future__ import annotations

import pytest

from topics import codec
from topics.errors import DecodeError
from topics.events import PromptEvent, TokenChunkEvent


def _nested(depth: int) -> str:
    return "[" * depth + "]" * depth


@pytest.mark.parametrize(
    ("field", "reason"), [("kind", "unknown_kind"), ("schema_version", "unsupported_schema_version")]
)
@pytest.mark.parametrize("depth", [3, 1000, 1020])
def test_values_nested_near_the_parser_limit_are_decode_errors(field: str, reason: str, depth: int) -> None:
    # orjson parses up to 1024 levels; a full repr of such a value exhausts Python's recursion limit.
    raw = f'{{"{field}":{_nested(depth)},"conversation_id":"c","message_id":"m"}}'.encode()
    with pytest.raises(DecodeError) as caught:
        codec.decode(raw, PromptEvent)
    assert (caught.value.reason, caught.value.field) == (reason, field)
    assert len(caught.value.detail) < 200


def test_decode_any_quotes_a_nested_kind_in_bounded_form() -> None:
    with pytest.raises(DecodeError) as caught:
        codec.decode_any(f'{{"kind":{_nested(1020)}}}'.encode())
    assert caught.value.reason == "unknown_kind" and len(caught.value.detail) < 200


def test_a_huge_offending_string_is_not_copied_into_the_error() -> None:
    raw = (
        b'{"kind":"token_chunk","conversation_id":"c","message_id":"m","seq":0,"text":"x","kind":"'
        + b"y" * 60_000
        + b'"}'
    )
    with pytest.raises(DecodeError) as caught:
        codec.decode(raw, TokenChunkEvent)
    assert caught.value.reason == "unknown_kind" and len(str(caught.value)) < 300
