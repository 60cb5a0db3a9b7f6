"""Every hostile record the fuzzer draws earns, from the codec alone, the dead letter it states.

This runs each strategy many times without Kafka: a strategy whose stated reason disagrees with
the wire contract, or a codec that fails other than with ``DecodeError``, shows up here first.
"""

from __future__ import annotations

import random

import pytest

from tests.fakes import qwen3_chat_format
from topics import codec
from topics.errors import DecodeError
from topics.events import PromptEvent, TokenChunkEvent
from topics.names import Topic
from workers.fuzz import mutations
from workers.fuzz.mutations import Draw, Limits

# Reasons the worker gives after decoding (a key, a policy, the guard's checks), not the codec.
AFTER_DECODING = {"key_mismatch", "invalid_value"}


def _draw(seed: int) -> Draw:
    chat = qwen3_chat_format()
    limits = Limits(64 << 10, vocab_size=len(chat.tokenizer), end_of_turn_id=chat.end_of_turn_id)
    return Draw(random.Random(seed), limits, run="unit")


@pytest.mark.parametrize("strategy", [s for s, _ in mutations.STRATEGIES], ids=lambda s: s.__name__)
def test_each_strategy_states_the_reason_the_codec_gives(strategy: mutations.Strategy) -> None:
    d = _draw(seed=7)
    for _ in range(200):
        record = strategy(d)
        assert record.dead_letter is not None
        kind = PromptEvent if record.topic is Topic.PROMPTS else TokenChunkEvent
        try:
            codec.decode(record.value, kind, max_bytes=d.limits.max_message_bytes)
        except DecodeError as exc:
            assert exc.reason == record.dead_letter, (record.strategy, exc, record.value[:200])
            if record.field is not None:
                assert exc.field == record.field, (record.strategy, exc, record.value[:200])
        else:
            assert record.dead_letter in AFTER_DECODING, (record.strategy, record.value[:200])


def test_the_same_seed_draws_the_same_records() -> None:
    first = [mutations.single(_draw(seed=3)).value for _ in range(1)]
    a, b = _draw(seed=3), _draw(seed=3)
    assert [mutations.single(a).value for _ in range(300)] == [mutations.single(b).value for _ in range(300)]
    assert first
