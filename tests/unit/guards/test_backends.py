"""PrefilterBackend and CascadeBackend against fakes."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from workers.backends.base import PromptRequest, ResponseRequest
from workers.backends.cascade import CascadeBackend
from workers.backends.prefilter import PrefilterBackend, PromptOnlyError
from workers.backends.prefilter_meta import PrefilterMeta, Thresholds
from workers.backends.taxonomy import QUERY_CATEGORIES
from workers.settings import Settings, load_settings

from .fakes import ScriptedGuard, ScriptedScorer

ROWS = {
    "hello": (0.97, 0.02, 0.01),  # confidently safe
    "build a bomb": (0.01, 0.01, 0.98),  # confidently unsafe
    "is it legal to pick a lock": (0.5, 0.3, 0.2),  # unsure
}


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    PrefilterMeta(
        encoder="fake",
        encoder_dtype="float32",
        embedding_dim=32,
        hidden=8,
        risk_labels=("safe", "controversial", "unsafe"),
        categories=QUERY_CATEGORIES,
        thresholds=Thresholds(unsafe=0.9, safe=0.9, rule="test"),
        probe=(0.0,) * 8,
    ).write(tmp_path)
    return load_settings(guard={"prefilter_model": str(tmp_path)})


def _request(text: str, key: str = "k") -> PromptRequest:
    return PromptRequest(key=key, token_ids=(), text=text)


async def test_prefilter_scores_and_decides(settings: Settings) -> None:
    scorer = ScriptedScorer(ROWS, category=QUERY_CATEGORIES.index("Violent"))
    backend = PrefilterBackend(settings, load=lambda: scorer)
    await backend.start()
    try:
        assert backend.unavailable() is None
        unsafe = await backend.score_prompt(_request("build a bomb"))
        unsure = await backend.score_prompt(_request("is it legal to pick a lock"))
    finally:
        await backend.close()
    assert unsafe.decided and unsafe.tier == "prefilter"
    assert backend.unavailable() == "the prefilter is not started"  # closed
    assert backend.info.query_categories[unsafe.category] == "Violent"
    assert not unsure.decided
    np.testing.assert_allclose(unsafe.risk, ROWS["build a bomb"])


async def test_prefilter_thresholds_can_be_overridden(settings: Settings) -> None:
    strict = Thresholds(unsafe=0.99, safe=0.99, rule="deployment")
    backend = PrefilterBackend(settings, load=lambda: ScriptedScorer(ROWS), thresholds=strict)
    await backend.start()
    try:
        assert not (await backend.score_prompt(_request("build a bomb"))).decided
    finally:
        await backend.close()


async def test_prefilter_batches_concurrent_prompts(settings: Settings) -> None:
    scorer = ScriptedScorer(ROWS)
    backend = PrefilterBackend(settings, load=lambda: scorer, max_batch=64)
    await backend.start()
    try:
        texts = [t for t in ROWS for _ in range(10)]
        results = await asyncio.gather(*(backend.score_prompt(_request(t, str(i))) for i, t in enumerate(texts)))
    finally:
        await backend.close()
    assert [tuple(r.risk.round(2)) for r in results] == [ROWS[t] for t in texts]
    assert len(scorer.batches) < len(texts)  # waiting requests were scored together
    assert sum(map(len, scorer.batches)) == len(texts)


async def test_prefilter_refuses_what_it_cannot_do(settings: Settings) -> None:
    backend = PrefilterBackend(settings, load=lambda: ScriptedScorer(ROWS))
    with pytest.raises(RuntimeError, match="start"):
        await backend.score_prompt(_request("hello"))
    await backend.start()
    try:
        with pytest.raises(PromptOnlyError):
            await backend.score_response(ResponseRequest("k", 0, [1, 2], history=_no_history))
        with pytest.raises(PromptOnlyError):
            _ = backend.chat_format
        with pytest.raises(ValueError, match="no text"):
            await backend.score_prompt(_request("   "))
    finally:
        await backend.close()


async def test_prefilter_batch_failure_fails_only_that_batch(settings: Settings) -> None:
    scorer = ScriptedScorer(ROWS)
    backend = PrefilterBackend(settings, load=lambda: scorer)
    await backend.start()
    try:
        with pytest.raises(KeyError):
            await backend.score_prompt(_request("not in the table"))
        assert (await backend.score_prompt(_request("hello"))).decided
    finally:
        await backend.close()


async def _no_history() -> list[int]:
    raise AssertionError("history is not needed")


def _stream(category: int = 0, categories: tuple[str, ...] | None = None) -> ScriptedGuard:
    """A stream guard whose query categories are in another order and spelled as in the checkpoint."""
    if categories is None:
        categories = tuple(f'"{c}"' if c == "Violent" else c for c in reversed(QUERY_CATEGORIES))
    return ScriptedGuard(rows=ROWS, categories=categories, tier="stream", category=category)


async def test_cascade_decides_confident_prompts_at_the_prefilter() -> None:
    prefilter = ScriptedGuard(rows=ROWS, tier="prefilter", decided=True, category=QUERY_CATEGORIES.index("Violent"))
    stream = _stream()
    cascade = CascadeBackend(prefilter, stream)
    await cascade.start()
    scores = await cascade.score_prompt(_request("build a bomb"))
    assert scores.tier == "prefilter" and stream.seen == []
    assert stream.info.query_categories[scores.category] == '"Violent"'  # translated into the stream's order
    assert cascade.info == stream.info and cascade.chat_format is stream.chat_format
    await cascade.close()
    assert prefilter.closed and stream.closed


async def test_cascade_starts_both_tiers_together_and_reports_a_failed_one(monkeypatch: pytest.MonkeyPatch) -> None:
    """The stream guard's engine loads in its own process while the prefilter loads in this one."""
    prefilter, stream = ScriptedGuard(rows=ROWS, tier="prefilter"), _stream()
    both = asyncio.Barrier(2)

    async def meet() -> None:  # each start waits for the other: one after the other would hang
        await asyncio.wait_for(both.wait(), 5)

    monkeypatch.setattr(prefilter, "start", meet)
    monkeypatch.setattr(stream, "start", meet)
    await CascadeBackend(prefilter, stream).start()

    async def broken() -> None:
        raise RuntimeError("the prefilter's files are missing")

    monkeypatch.setattr(prefilter, "start", broken)
    monkeypatch.setattr(stream, "start", ScriptedGuard.start.__get__(stream))
    with pytest.raises(RuntimeError, match="files are missing"):
        await CascadeBackend(prefilter, stream).start()


async def test_cascade_is_unavailable_when_either_tier_is() -> None:
    prefilter = ScriptedGuard(rows=ROWS, tier="prefilter")
    stream = _stream()
    cascade = CascadeBackend(prefilter, stream)
    await cascade.start()
    assert cascade.unavailable() is None
    prefilter.down = "the prefilter's batch task ended"
    assert cascade.unavailable() == "the prefilter's batch task ended"
    stream.down = "the engine process exited with -9; restarting it"
    assert cascade.unavailable() == "the engine process exited with -9; restarting it"
    await cascade.close()


async def test_cascade_escalates_the_rest_and_delegates_responses() -> None:
    prefilter = ScriptedGuard(rows=ROWS, tier="prefilter", decided=False)
    stream = _stream(category=3)
    cascade = CascadeBackend(prefilter, stream)
    await cascade.start()
    scores = await cascade.score_prompt(_request("is it legal to pick a lock"))
    assert scores.tier == "stream" and scores.category == 3
    assert stream.seen == ["is it legal to pick a lock"]
    request = ResponseRequest("k", 5, [7, 8, 9], history=_no_history)
    assert (await cascade.score_response(request)).risk.shape == (3, 3)
    cascade.release("k")
    assert stream.responses == [request] and stream.released == ["k"]


async def test_cascade_needs_every_prefilter_category_in_the_stream_guard() -> None:
    cascade = CascadeBackend(ScriptedGuard(rows=ROWS, tier="prefilter"), _stream(categories=QUERY_CATEGORIES[:8]))
    with pytest.raises(ValueError, match="Jailbreak"):
        await cascade.start()


async def test_cascade_primes_the_stream_guard_with_prompts_the_prefilter_allows() -> None:
    prefilter = ScriptedGuard(rows=ROWS, tier="prefilter", decided=True)
    stream = _stream()
    cascade = CascadeBackend(prefilter, stream)
    await cascade.start()
    allowed = await cascade.score_prompt(_request("hello"))
    blocked = await cascade.score_prompt(_request("build a bomb"))
    await asyncio.sleep(0)  # the background prime runs once the verdict is returned
    assert allowed.tier == blocked.tier == "prefilter"
    # The allowed prompt is in the stream guard's cache before its answer starts; the blocked one is not.
    assert stream.seen == ["hello"]
    await cascade.close()


async def test_cascade_prime_failure_is_not_a_verdict_failure(caplog: pytest.LogCaptureFixture) -> None:
    prefilter = ScriptedGuard(rows=ROWS, tier="prefilter", decided=True)
    stream = _stream()
    stream.rows = {}  # the stream guard fails every prompt (KeyError)
    cascade = CascadeBackend(prefilter, stream)
    await cascade.start()
    assert (await cascade.score_prompt(_request("hello"))).tier == "prefilter"
    for _ in range(3):
        await asyncio.sleep(0)
    assert "priming the stream guard" in caplog.text
    await cascade.close()


@pytest.mark.parametrize(
    ("setting", "native", "expected"),
    [("auto", False, "float32"), ("auto", True, None), ("bfloat16", False, "bfloat16"), ("float32", True, "float32")],
)
def test_prefilter_encoder_runs_in_float32_on_cpus_without_bfloat16_by_default(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, setting: str, native: bool, expected: str | None
) -> None:
    """``None``: the head's training precision (bfloat16 for the shipped head)."""
    from workers.backends.prefilter_model import Prefilter
    from workers.engine import precision

    monkeypatch.setattr(precision, "cpu_has_native_bfloat16", lambda: native)
    seen: dict[str, object] = {}
    monkeypatch.setattr(Prefilter, "load", classmethod(lambda cls, *a, **kw: seen.update(kw)))
    configured = settings.model_copy(
        update={
            "guard": settings.guard.model_copy(update={"prefilter_dtype": setting}),
            "engine": settings.engine.model_copy(update={"device": "cpu"}),
        }
    )
    PrefilterBackend(configured)._load_prefilter()
    assert seen["dtype"] == expected and seen["device"] == "cpu"
