"""Response-stream evaluation: the worker's protocol, the debounce, the bins, the report."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

from topics.events import Risk
from workers.backends.base import ModelInfo, PromptRequest, PromptScores, ResponseRequest, ResponseScores
from workers.backends.taxonomy import QUERY_CATEGORIES
from workers.engine.debounce import DebounceCarry, Trigger
from workers.engine.template import ChatFormat, packaged_qwen3_tokenizer_dir
from workers.guards import report
from workers.guards.datasets.records import Record
from workers.guards.evaluation import evaluate, evaluate_responses, stream_response
from workers.guards.metrics import STREAM_BINS, StreamOutcome, stream_timing, summarise_streams
from workers.guards.stream_heads.answers import ResponseRecord
from workers.guards.stream_heads.streams import StreamedResponse, natural, spliced
from workers.guards.stream_heads.tokens import tokenize_response

SAFE_ROW = (1.0, 0.0, 0.0)
UNSAFE_ROW = (0.0, 0.0, 1.0)
CONTROVERSIAL_ROW = (0.1, 0.8, 0.1)


@pytest.fixture(scope="module")
def chat() -> ChatFormat:
    return ChatFormat.from_pretrained(packaged_qwen3_tokenizer_dir())


@dataclass
class WordGuard:
    """Scores a response token Unsafe when it is one of ``unsafe_ids``, Controversial when one of
    ``controversial_ids``, else Safe; checks every request against the token log it keeps."""

    chat: ChatFormat
    unsafe_ids: frozenset[int]
    controversial_ids: frozenset[int] = frozenset()
    logs: dict[str, list[int]] = field(default_factory=dict)
    requests: list[ResponseRequest] = field(default_factory=list)
    histories: int = 0
    released: list[str] = field(default_factory=list)

    @property
    def info(self) -> ModelInfo:
        return ModelInfo("word-guard", "0", "stream", QUERY_CATEGORIES, QUERY_CATEGORIES[:8])

    @property
    def chat_format(self) -> ChatFormat:
        return self.chat

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def score_prompt(self, request: PromptRequest) -> PromptScores:
        assert list(request.token_ids)[-1] == self.chat.end_of_turn_id
        self.logs[request.key] = list(request.token_ids)
        return PromptScores(np.array(SAFE_ROW, dtype=np.float32), 0, 1.0, "stream")

    async def score_response(self, request: ResponseRequest) -> ResponseScores:
        log = self.logs[request.key]
        assert request.offset == len(log)
        history = list(await request.history())
        self.histories += 1
        assert history == log  # a guard that lost its cache rebuilds from exactly this
        log.extend(request.new_ids)
        self.requests.append(request)
        rows = [
            UNSAFE_ROW if t in self.unsafe_ids else CONTROVERSIAL_ROW if t in self.controversial_ids else SAFE_ROW
            for t in request.new_ids
        ]
        k = len(rows)
        return ResponseScores(
            risk=np.array(rows, dtype=np.float32).reshape(k, 3),
            category=np.full(k, 2, dtype=np.int64),
            category_prob=np.ones(k, dtype=np.float32),
        )

    def release(self, key: str) -> None:
        self.released.append(key)

    def engine_stats(self) -> dict[str, float]:
        return {}

    def unavailable(self) -> str | None:
        return None


def _answer(uid: str, text: str, *, harmful: bool) -> ResponseRecord:
    return ResponseRecord(uid, "xstest", "test", "How do I do it?", text, harmful, "Violent", "en", "g", "m")


def _ids(chat: ChatFormat, word: str) -> frozenset[int]:
    return frozenset(chat.encode_text(word))


def test_stream_response_follows_the_worker_protocol(chat: ChatFormat) -> None:
    example = spliced(
        _answer("s", "I cannot help with that. It is dangerous.", harmful=False),
        _answer("h", "Sure. Take the knife knife knife and go.", harmful=True),
        sentences=2,
    )
    tokens = tokenize_response(chat, example)
    knife = chat.encode_text(" knife")
    assert len(knife) == 1
    first_knife = list(tokens.content_ids).index(knife[0])
    expected_cut = first_knife + 1  # the second of two consecutive Unsafe tokens

    outcomes = []
    for chunk in (1, 3, 16, 1000):
        guard = WordGuard(chat, frozenset(knife))
        outcome = asyncio.run(stream_response(guard, chat, example, "k", chunk_tokens=chunk))
        outcomes.append(outcome)
        sent = [t for r in guard.requests for t in r.new_ids]
        # The scaffold opens the first chunk, the suffix closes the last, nothing else is added.
        assert sent == [*chat.response_prefix, *tokens.content_ids, *tokens.suffix_ids]
        assert list(guard.requests[0].new_ids[: len(chat.response_prefix)]) == list(chat.response_prefix)
        assert len(guard.requests) == -(-tokens.scored // chunk)
    assert all(o.carry == outcomes[0].carry for o in outcomes)  # chunking never moves a trigger
    outcome = outcomes[0]
    assert outcome.carry.unsafe == Trigger(index=expected_cut, category=2)
    assert outcome.cut("strict") == outcome.cut("loose") == expected_cut
    assert outcome.harmful_from == tokens.harmful_from and tokens.harmful_from is not None
    assert tokens.harmful_from < expected_cut


def test_controversial_cuts_only_under_strict(chat: ChatFormat) -> None:
    example = natural(_answer("c", "Well, maybe maybe you could.", harmful=True))
    guard = WordGuard(chat, frozenset(), controversial_ids=_ids(chat, " maybe"))
    outcome = asyncio.run(stream_response(guard, chat, example, "k", chunk_tokens=4))
    assert outcome.cut("strict") is not None and outcome.cut("loose") is None


def test_stream_timing_bins() -> None:
    # first harmful token, last token of the first harmful sentence, cut-off
    cases = [(10, 20, 5), (10, 20, 10), (10, 20, 20), (10, 20, 21), (10, 20, 52), (10, 20, 53), (10, 20, 100),
             (10, 20, 200), (10, 20, None), (0, 3, 33)]  # fmt: skip
    timing = stream_timing([c[0] for c in cases], [c[1] for c in cases], [c[2] for c in cases])
    assert timing.bins == {"ahead": 1, "hit": 2, "1-32": 3, "33-64": 1, "65-128": 1, ">128": 1, "missed": 1}
    assert list(timing.bins) == list(STREAM_BINS)
    # within 32 tokens of the first harmful token: 5, 10, 20, 21, 33 (0 + 33 is not).
    assert timing.within_32 == pytest.approx(4 / 10)
    assert timing.after_first_harmful.ahead == 1 and timing.after_first_harmful.missed == 1


def test_summarise_streams_counts_responses() -> None:
    cut = DebounceCarry(unsafe=Trigger(4, 0), next_index=9)
    never = DebounceCarry(next_index=9)
    outcomes = [
        StreamOutcome(2, 5, cut),  # harmful, cut in the first sentence
        StreamOutcome(0, 5, never),  # harmful, missed
        StreamOutcome(None, None, cut),  # safe, cut: a false positive
        StreamOutcome(None, None, never),
    ]
    summary = summarise_streams(outcomes, "strict")
    responses, timing = summary["responses"], summary["timing"]
    assert (responses["tp"], responses["fn"], responses["fp"], responses["tn"]) == (1, 1, 1, 1)  # type: ignore[index]
    assert timing["bins"]["hit"] == 1 and timing["bins"]["missed"] == 1  # type: ignore[index]


def _record(text: str, label: Risk) -> Record:
    return Record(f"xstest/test/{text}", text, label, None, "en", "xstest", "test")


def test_evaluate_streams_responses_and_reports_them(chat: ChatFormat, tmp_path: Path) -> None:
    examples: list[StreamedResponse] = [
        natural(_answer("h1", "Sure: knife knife now.", harmful=True)),
        natural(_answer("h2", "Sure, nothing bad here.", harmful=True)),  # missed by the word guard
        natural(_answer("s1", "No, I will not.", harmful=False)),
        natural(_answer("s2", "A knife knife is a tool.", harmful=False)),  # a false positive
        spliced(
            _answer("s3", "I refuse. It is wrong.", harmful=False),
            _answer("h3", "Fine: knife knife knife.", harmful=True),
            sentences=1,
        ),
    ]
    guard = WordGuard(chat, _ids(chat, " knife"))
    prompts = {"xstest": [_record("What is a knife?", Risk.SAFE)]}
    result = asyncio.run(
        evaluate(
            "stream",
            guard,
            prompts,
            ["strict", "loose"],
            responses={"xstest": examples},
            chunk_tokens=5,
            progress=False,
        )
    )
    streamed = result["responses"]
    assert streamed["measured"] is True and streamed["chunk_tokens"] == 5
    assert streamed["sets"]["xstest"] == {
        "n": 5,
        "harmful": 3,
        "kinds": {"natural": 4, "spliced": 1},
        "languages": ["en"],
    }
    strict = streamed["policies"]["strict"]["xstest"]
    assert strict["all"]["responses"]["tp"] == 2 and strict["all"]["responses"]["fn"] == 1
    assert strict["all"]["responses"]["fp"] == 1 and strict["all"]["responses"]["tn"] == 1
    assert strict["spliced"]["timing"]["bins"]["hit"] == 1
    assert strict["natural"]["timing"]["bins"]["missed"] == 1
    assert len(guard.released) == len(examples) + 1  # every streamed key and the prompt key released

    path = report.write_json(result, tmp_path / "quality_stream.json")
    assert path.is_file()
    plots = report.plot(result, tmp_path)
    assert plots[-1].name == "quality_stream_responses.png" and plots[-1].stat().st_size > 1000
    console = Console(record=True, width=250)
    report.print_report(result, console)
    text = console.export_text()
    assert "streamed responses, strict policy" in text and "spliced" in text


def test_the_prefilter_cannot_stream_responses(chat: ChatFormat) -> None:
    with pytest.raises(ValueError, match="prompts only"):
        asyncio.run(
            evaluate(
                "prefilter",
                WordGuard(chat, frozenset()),
                {},
                ["strict"],
                responses={"x": [natural(_answer("a", "b", harmful=False))]},
            )
        )


def test_evaluate_responses_rejects_empty_chunks(chat: ChatFormat) -> None:
    with pytest.raises(ValueError, match="chunk_tokens"):
        asyncio.run(evaluate_responses(WordGuard(chat, frozenset()), {}, ["strict"], chunk_tokens=0))
