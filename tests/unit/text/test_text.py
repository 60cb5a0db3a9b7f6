"""Incremental re-tokenisation gives the whole-text ids for any split of the text into deltas."""

from __future__ import annotations

import itertools
import json
import logging
import unicodedata
from collections.abc import Sequence

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from transformers import PreTrainedTokenizerBase, PreTrainedTokenizerFast

from workers.engine import text
from workers.engine.template import ChatFormat
from workers.engine.text import IncrementalTokenizer, TextDecodeError, UnsupportedTokenizer, prepare

# Pieces chosen to sit on every rule of the pre-tokenizer and normaliser: contractions, digit
# runs, whitespace runs with and without line breaks, punctuation runs, Cyrillic and CJK runs,
# emoji (4-byte UTF-8), combining marks (NFC composes and reorders them), Hangul jamo (NFC composes
# them algorithmically), "<" + U+0338 (composes to "≮"), and added tokens whole or cut.
FRAGMENTS = [
    "Hello", " world", "'s", "'S", "'ll", "'re", "'", "l", "t", " don't", "42", "7", " 3.14", ",", ".", "!?",
    " ", "  ", "   ", "\t", "\n", "\n\n", "\r\n", "\r", " \n", "  \n ", "\u00a0", "\u3000",
    "Привет", " мир", "й", "и", "\u0306", "中文", "文本", "，", "。", "😀", "👍🏽", " 🙂",
    "e", "\u0301", "\u0323", "A\u030a", "\u212b", "ﬁ", "<", "\u0338", "\u1100", "\u1161", "\u11a8", "가",
    "<|im_end|>", "<|im_", "end|>", "<think>", "</think>", "<tool_call>", "ع", "\u0f71", "\u0f73",
]  # fmt: skip
texts = st.lists(st.sampled_from(FRAGMENTS) | st.text(max_size=3), max_size=24).map("".join)
# A small alphabet makes the rare sequences frequent: marks after marks of another combining
# class, whitespace runs that end in spaces after a line break, contractions cut short.
dense_texts = st.text(
    alphabet=[*"aeLls'S1 \n\r\t.<", "\u0301", "\u0323", "\u0338", "\u1100", "\u1161", "\u11a8", "가", "ж"],
    max_size=30,
)


def split_at(data: str | bytes, cuts: Sequence[int]) -> list[str] | list[bytes]:
    bounds = [0, *sorted({c % (len(data) + 1) for c in cuts}), len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]  # type: ignore[return-value]


def run(
    source: ChatFormat | PreTrainedTokenizerBase, deltas: Sequence[str | bytes], resume_at: int | None = None
) -> list[int]:
    """Feed every delta; at ``resume_at`` continue in a new instance built from the JSON state."""
    inc = IncrementalTokenizer(source)
    ids: list[int] = []
    for index, delta in enumerate(deltas):
        if index == resume_at:
            inc = IncrementalTokenizer.from_state(source, json.loads(json.dumps(inc.state())))
        ids += inc.feed(delta)
    return ids + inc.finish()


def whole(fmt: ChatFormat, text: str) -> list[int]:
    return list(fmt.tokenizer.encode(text, add_special_tokens=False))


# Generation is slow when the machine is loaded; the examples are fixed (derandomised), so skip that check.
common = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


class TestEqualsWholeText:
    @common
    @given(text=texts, cuts=st.lists(st.integers(0, 200), max_size=12), resume=st.integers(0, 12))
    def test_any_string_split(self, qwen_format: ChatFormat, text: str, cuts: list[int], resume: int) -> None:
        assert run(qwen_format, split_at(text, cuts), resume_at=resume) == whole(qwen_format, text)

    @common
    @given(text=texts, cuts=st.lists(st.integers(0, 400), max_size=12), resume=st.integers(0, 12))
    def test_any_byte_split(self, qwen_format: ChatFormat, text: str, cuts: list[int], resume: int) -> None:
        """Cuts fall anywhere in the UTF-8 bytes, including inside multi-byte characters."""
        assert run(qwen_format, split_at(text.encode(), cuts), resume_at=resume) == whole(qwen_format, text)

    @common
    @given(text=texts)
    # Each of these fails if one hold-back rule is dropped: the whitespace run, the normalisation
    # unit at the cut, the added-token prefix.
    @example(text=" \n  \n ")
    @example(text="\n\t\t\n")
    @example(text="e\u0338\u0323ext")
    @example(text="ab<|im_end|>")
    def test_one_character_at_a_time(self, qwen_format: ChatFormat, text: str) -> None:
        assert run(qwen_format, list(text)) == whole(qwen_format, text)

    @common
    @given(text=dense_texts, cuts=st.lists(st.integers(0, 60), max_size=30))
    def test_dense_boundaries(self, qwen_format: ChatFormat, text: str, cuts: list[int]) -> None:
        assert run(qwen_format, split_at(text, cuts)) == whole(qwen_format, text)

    @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(text=texts | dense_texts, cuts=st.lists(st.integers(0, 200), max_size=12))
    @example(text="x'll", cuts=[1, 2, 3])  # fails if the last two characters are not held back
    def test_gpt2_split_pattern(self, smol_format: ChatFormat, text: str, cuts: list[int]) -> None:
        """SmolLM2's tokenizer: GPT-2 pattern, case-sensitive contractions, no normaliser."""
        assert run(smol_format, split_at(text, cuts)) == whole(smol_format, text)

    @pytest.mark.parametrize(
        "deltas",
        [
            ["Приве", "т, как ", "дела?"],
            ["中文", "文本，", "好的。"],
            ["x'", "l", "l be"],  # a contraction completed by the next delta
            ["a\r", "\nb"],
            ["end  ", "  \n", "next"],
            ["a<|im_", "end|>b"],
            ["caf", "e", "\u0301 ok"],  # NFC composes e + U+0301 across deltas
            ["\u1100", "\u1161", "\u11a8"],  # Hangul jamo compose into one syllable
        ],
    )
    def test_known_boundaries(self, qwen_format: ChatFormat, deltas: list[str]) -> None:
        assert run(qwen_format, deltas) == whole(qwen_format, "".join(deltas))

    def test_utf8_cut_inside_characters(self, qwen_format: ChatFormat) -> None:
        data = "Ж😀中".encode()
        assert run(qwen_format, [data[i : i + 1] for i in range(len(data))]) == whole(qwen_format, "Ж😀中")

    def test_built_from_a_bare_tokenizer(self, qwen_format: ChatFormat) -> None:
        assert run(qwen_format.tokenizer, ["Hello", " there"]) == whole(qwen_format, "Hello there")


class TestHoldBack:
    def test_commits_all_but_the_unfinished_tail(self, qwen_format: ChatFormat) -> None:
        inc = IncrementalTokenizer(qwen_format)
        assert inc.feed("Hello world, this") == whole(qwen_format, "Hello world,")
        assert inc.pending_text == " this"
        assert inc.feed(" is") == whole(qwen_format, " this")

    def test_tail_stays_bounded_on_a_long_answer(self, qwen_format: ChatFormat) -> None:
        """Work per delta is the held-back tail plus the delta, not the answer so far."""
        text = "The quick brown fox, 42 times, jumps over the lazy dog.\n" * 200 + "Быстрая лиса. 中文文本。" * 50
        inc = IncrementalTokenizer(qwen_format)
        ids, longest = [], 0
        for start in range(0, len(text), 7):
            ids += inc.feed(text[start : start + 7])
            longest = max(longest, len(inc.pending_text))
        assert ids + inc.finish() == whole(qwen_format, text)
        assert longest <= 16

    def test_state_is_small_json(self, qwen_format: ChatFormat) -> None:
        inc = IncrementalTokenizer(qwen_format)
        inc.feed("Some answer text ")
        inc.feed("ж".encode()[:1])
        state = json.loads(inc.state_json())
        assert state == {"v": 1, "pending": " text ", "partial": "d0", "committed": 2, "forced_cuts": 0}
        resumed = IncrementalTokenizer.from_state(qwen_format, inc.state_json())
        assert resumed.feed("ж".encode()[1:]) == inc.feed("ж".encode()[1:])

    def test_finish_then_go_on(self, qwen_format: ChatFormat) -> None:
        inc = IncrementalTokenizer(qwen_format)
        first = inc.feed("one two") + inc.finish()
        assert inc.finish() == []
        assert inc.state()["pending"] == ""
        assert first + inc.feed("three") + inc.finish() == whole(qwen_format, "one two") + whole(qwen_format, "three")
        assert inc.committed == len(first) + len(whole(qwen_format, "three"))


class TestOverflowGuard:
    def test_endless_piece_is_cut_with_a_warning(
        self, qwen_format: ChatFormat, caplog: pytest.LogCaptureFixture
    ) -> None:
        text = "a" * 3000 + " end"
        inc = IncrementalTokenizer(qwen_format, max_pending_chars=256)
        ids: list[int] = []
        with caplog.at_level(logging.WARNING, logger="workers.engine.text"):
            for start in range(0, len(text), 50):
                ids += inc.feed(text[start : start + 50])
                assert len(inc.pending_text) <= 256 + 50
        ids += inc.finish()
        assert inc.forced_cuts > 0
        assert "without a safe cut" in caplog.text
        assert qwen_format.tokenizer.decode(ids) == text  # lossless, though split differently

    @pytest.mark.parametrize("mark", ["\u0301", "\u0323\u0301"])
    def test_combining_marks_without_end_are_cut_too(self, qwen_format: ChatFormat, mark: str) -> None:
        # No character of the text starts a normalisation unit, so no cut is NFC-safe: the tail
        # must still be cut, or it (and the work of every delta) grows with the answer.
        text = mark * 3000
        inc = IncrementalTokenizer(qwen_format, max_pending_chars=256)
        ids: list[int] = []
        for start in range(0, len(text), 100):
            ids += inc.feed(text[start : start + 100])
            assert len(inc.pending_text) <= 256 + 100
        ids += inc.finish()
        assert inc.forced_cuts > 0
        # Every mark is kept; marks of different classes may be reordered within each side of a cut
        # instead of across it (NFC reorders them canonically).
        assert sorted(qwen_format.tokenizer.decode(ids)) == sorted(unicodedata.normalize("NFC", text))

    def test_below_the_limit_nothing_is_forced(self, qwen_format: ChatFormat) -> None:
        text = "b" * 200
        assert run(qwen_format, [text[i : i + 10] for i in range(0, 200, 10)]) == whole(qwen_format, text)

    def test_limit_must_leave_room(self, qwen_format: ChatFormat) -> None:
        with pytest.raises(ValueError, match="max_pending_chars"):
            IncrementalTokenizer(qwen_format, max_pending_chars=2)


class TestErrors:
    def test_invalid_utf8_leaves_the_state_alone(self, qwen_format: ChatFormat) -> None:
        inc = IncrementalTokenizer(qwen_format)
        inc.feed("ok ")
        before = inc.state()
        with pytest.raises(TextDecodeError, match="not valid UTF-8"):
            inc.feed(b"\xff\xfe")
        assert inc.state() == before

    def test_text_inside_a_byte_sequence(self, qwen_format: ChatFormat) -> None:
        inc = IncrementalTokenizer(qwen_format)
        inc.feed("€".encode()[:2])
        with pytest.raises(TextDecodeError, match="bytes of a UTF-8 character are pending"):
            inc.feed("x")
        with pytest.raises(TextDecodeError, match="ends inside a UTF-8 character"):
            inc.finish()

    @pytest.mark.parametrize(
        "state",
        [
            {"v": 99, "pending": "", "partial": "", "committed": 0, "forced_cuts": 0},
            {"v": 1, "pending": 3, "partial": "", "committed": 0, "forced_cuts": 0},
            {"v": 1, "pending": "", "partial": "zz", "committed": 0, "forced_cuts": 0},
            {"v": 1, "pending": ""},
        ],
    )
    def test_bad_state(self, qwen_format: ChatFormat, state: dict[str, object]) -> None:
        with pytest.raises(ValueError, match="incremental tokenizer state"):
            IncrementalTokenizer.from_state(qwen_format, state)

    def test_empty_state_starts_fresh(self, qwen_format: ChatFormat) -> None:
        assert IncrementalTokenizer.from_state(qwen_format, "").state() == IncrementalTokenizer(qwen_format).state()

    def test_unsupported_pipeline_is_refused(self, qwen_format: ChatFormat) -> None:
        from tokenizers import Tokenizer, models, pre_tokenizers

        bare = Tokenizer(models.BPE(vocab={"a": 0, "b": 1}, merges=[]))
        bare.pre_tokenizer = pre_tokenizers.Whitespace()
        with pytest.raises(UnsupportedTokenizer, match="pre-tokenizer"):
            IncrementalTokenizer(PreTrainedTokenizerFast(tokenizer_object=bare))  # type: ignore[no-untyped-call]


class TestPrepare:
    def test_builds_the_rules_ahead_of_the_first_chunk(self, qwen_format: ChatFormat) -> None:
        text._rules_for.cache_clear()
        text._composition_pairs.cache_clear()
        prepare(qwen_format)
        built = text._rules_for.cache_info()
        assert built.currsize == 1 and text._composition_pairs.cache_info().currsize == 1
        IncrementalTokenizer(qwen_format).feed("caf\u00e9 au lait ")
        used = text._rules_for.cache_info()
        assert used.misses == built.misses and used.hits > built.hits, "the first chunk parsed the tokenizer again"

    def test_refuses_an_unsupported_tokenizer_at_start_up(self) -> None:
        from tokenizers import Tokenizer, models, pre_tokenizers

        bare = Tokenizer(models.BPE(vocab={"a": 0, "b": 1}, merges=[]))
        bare.pre_tokenizer = pre_tokenizers.Whitespace()
        with pytest.raises(UnsupportedTokenizer, match="pre-tokenizer"):
            prepare(PreTrainedTokenizerFast(tokenizer_object=bare))  # type: ignore[no-untyped-call]
