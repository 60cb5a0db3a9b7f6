"""The shipped-guard benchmark's traffic and statistics (no broker: synthetic timings)."""

from __future__ import annotations

import itertools

import pytest

from workers.bench.shipped import Steadiness, _Recorder, capacity, summarise
from workers.bench.traffic import TrafficSource, words


def test_traffic_is_seeded_word_sized_and_mixed() -> None:
    first = list(itertools.islice(TrafficSource(3, unsafe_share=0.25, max_prompt_words=200), 400))
    again = list(itertools.islice(TrafficSource(3, unsafe_share=0.25, max_prompt_words=200), 400))
    assert first == again
    assert all(chunk.strip() and " " not in chunk.strip() for turn in first for chunk in turn.chunks)
    lengths = sorted(len(turn.prompt.split()) for turn in first)
    assert lengths[0] < 20 and lengths[-1] > 150  # short questions and long pasted contexts
    assert 0.15 < sum(t.turns_unsafe for t in first) / len(first) < 0.35
    unsafe = next(t for t in first if t.turns_unsafe)
    assert (
        "poison" in "".join(unsafe.chunks) or "keylogger" in "".join(unsafe.chunks) or "meth" in "".join(unsafe.chunks)
    )
    assert words("a  b\nc") == ("a  ", "b\n", "c")
    with pytest.raises(ValueError, match="unsafe_share"):
        TrafficSource(0, unsafe_share=1.5)


def _recorder(lag_growth_ms: float, *, unanswered: int = 0) -> _Recorder:
    """Two conversations, one chunk every 10 ms each for 20 s; verdicts lag 20 ms plus a growth."""
    recorder = _Recorder()
    for cid in ("a", "b"):
        recorder.prompt_sent[cid] = 0.0
        recorder.prompt_answered[cid] = 0.015
        recorder.prompt_tier[cid] = "prefilter"
        for seq in range(2000):
            sent = seq * 0.01
            recorder.chunk_sent[(cid, seq)] = sent
            recorder.last_seq[cid] = seq
            if seq >= 2000 - unanswered:
                continue
            recorder.chunk_answered[(cid, seq)] = sent + 0.02 + lag_growth_ms / 1000 * sent
            recorder.in_worker[(cid, seq)] = 5.0
    recorder.cut_seq["b"] = 100
    recorder.cut_received["b"] = recorder.chunk_sent[("b", 100)] + 0.05
    recorder.last_seq["b"] = 101  # one chunk leaked after the trigger
    return recorder


TIMING = {"start": 0.0, "measure_from": 0.0, "stop": 20.0}


def test_a_worker_that_keeps_up_is_sustained() -> None:
    result = summarise(_recorder(0.0), TIMING, 300.0, "m", 4.0)
    assert result.sustained and result.chunks_answered == result.chunks_published == 4000
    assert result.p50_ms == pytest.approx(20.0) and result.in_worker_p50_ms == pytest.approx(5.0)
    assert result.cutoffs == 1 and result.cutoff_p50_ms == pytest.approx(50.0)
    assert result.leaked_max == 1 and result.leaked_over_one == 0
    assert result.prompt_tiers == {"prefilter": 2} and result.prompt_p50_ms == pytest.approx(15.0)


def test_a_growing_lag_or_a_missing_verdict_is_not_sustained() -> None:
    growing = summarise(_recorder(10.0), TIMING, 400.0, "m", 4.0)  # 10 ms more lag per second of run
    assert not growing.sustained and growing.late_p50_ms > Steadiness.factor * growing.early_p50_ms
    missing = summarise(_recorder(0.0, unanswered=1), TIMING, 500.0, "m", 4.0)
    assert not missing.sustained and missing.chunks_answered == missing.chunks_published - 2
    kept = summarise(_recorder(0.0), TIMING, 300.0, "m", 4.0)
    assert capacity([kept, growing, missing]) == 300.0
    assert capacity([growing]) is None


def test_a_draining_backlog_of_seconds_is_not_keeping_up() -> None:
    assert Steadiness.flat(40.0, 50.0)
    assert not Steadiness.flat(5000.0, 3000.0)  # shrinking, but still seconds behind
