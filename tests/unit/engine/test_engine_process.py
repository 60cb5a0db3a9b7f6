"""The engine in its own process (``engine.isolation: process``): same scores, same errors, and a
dead engine process is an explicit failure followed by a fresh process, never a silent pass."""

from __future__ import annotations

import asyncio
import functools
import os
import signal
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
import orjson
import pytest

from tests.unit.engine.harness import history_of
from workers.backends.base import PromptRequest, ResponseRequest
from workers.backends.stream import StreamBackend
from workers.engine.jobs import PromptJob, SchedulerClosed, SchedulerFailed, SequenceTooLong
from workers.engine.process import EngineProcess, EngineStartError
from workers.engine.scores import HeadScores
from workers.engine.wire import EngineError, decode_error, decode_scores, encode_error, encode_scores, frame
from workers.settings import Settings, load_settings

PROMPT = [151644, 872, 198, 4340, 653, 358, 22544, 16158, 30, 151645]
ANSWER = [61911, 19828, 11, 3015, 323, 40480, 11, 1221, 22544, 432, 13]


def _settings(checkpoint: Path, isolation: str) -> Settings:
    return load_settings(
        guard={"backend": "stream", "checkpoint": str(checkpoint), "allow_test_checkpoint": True},
        engine={
            "device": "cpu",
            "kv_budget_bytes": 1 << 20,
            "page_size": 8,
            "max_wait_ms": 1.0,
            "isolation": isolation,
        },
    )


async def _conversation(backend: StreamBackend, key: str) -> list[npt.NDArray[np.generic]]:
    """A prompt, the scaffold with the first words, the rest after a release (a rebuild from history)."""
    prefix = list(backend.chat_format.response_prefix)
    prompt = await backend.score_prompt(PromptRequest(key, PROMPT, ""))
    first = [*prefix, *ANSWER[:4]]
    one = await backend.score_response(
        ResponseRequest(key, len(PROMPT), first, functools.partial(history_of, list(PROMPT)))
    )
    log = [*PROMPT, *first]
    backend.release(key)
    two = await backend.score_response(
        ResponseRequest(key, len(log), ANSWER[4:], functools.partial(history_of, list(log)))
    )
    return [prompt.risk, one.risk, two.risk, one.category, two.category]


async def test_scores_through_the_engine_process_equal_the_in_process_engine(tiny_checkpoint: Path) -> None:
    results = {}
    for isolation in ("thread", "process"):
        backend = StreamBackend(_settings(tiny_checkpoint, isolation))
        await backend.start()
        try:
            results[isolation] = await _conversation(backend, "k")
            stats = backend.engine_stats()
            assert stats["rebuilds"] == 1 and stats["forwards"] >= 3 and stats["kv_bytes_used"] > 0
        finally:
            await backend.close()
    for got, want in zip(results["process"], results["thread"], strict=True):
        np.testing.assert_array_equal(got, want)  # the same model and forwards: bit for bit


async def test_a_killed_engine_process_fails_what_is_in_flight_then_restarts(tiny_checkpoint: Path) -> None:
    backend = StreamBackend(_settings(tiny_checkpoint, "process"))
    await backend.start()
    try:
        engine = backend.scheduler
        assert isinstance(engine, EngineProcess) and engine.pid is not None
        before = await _conversation(backend, "a")
        stalled = asyncio.Event()

        async def never() -> Sequence[int]:  # holds the request in the engine while it is killed
            stalled.set()
            await asyncio.sleep(3600)
            return []

        in_flight = asyncio.create_task(backend.score_response(ResponseRequest("gone", 40, [13], never)))
        await asyncio.wait_for(stalled.wait(), 30)
        first_pid = engine.pid
        assert backend.unavailable() is None
        os.kill(first_pid, signal.SIGKILL)
        with pytest.raises(SchedulerFailed, match="engine process exited with -9"):
            await asyncio.wait_for(in_flight, 30)
        down = backend.unavailable()
        assert down is not None and "exited with -9; restarting" in down  # what /healthz reports
        # A new engine process starts at once, without waiting for a request.
        for _ in range(600):
            if engine.pid is not None and backend.unavailable() is None:
                break
            await asyncio.sleep(0.1)
        assert engine.pid not in (None, first_pid) and engine.starts == 2
        # Its KV comes back from the history.
        after = await _conversation(backend, "a")
        assert engine.starts == 2 and backend.engine_stats()["engine_restarts"] == 1
        for got, want in zip(after, before, strict=True):
            np.testing.assert_array_equal(got, want)
        assert backend.engine_stats()["forwards"] >= 6  # counters continue across processes
    finally:
        await backend.close()
    with pytest.raises(SchedulerClosed):
        await engine.score_prompt(PromptJob("x", PROMPT))


async def test_a_history_error_reaches_the_caller_as_it_is(tiny_checkpoint: Path) -> None:
    backend = StreamBackend(_settings(tiny_checkpoint, "process"))
    await backend.start()
    try:

        class StoreDown(ConnectionError):
            pass

        async def failing() -> Sequence[int]:
            raise StoreDown("redis is gone")

        with pytest.raises(StoreDown, match="redis is gone"):
            await backend.score_response(ResponseRequest("k", len(PROMPT), [13], failing))
        # The engine dropped that job and serves the next one.
        scores = await backend.score_prompt(PromptRequest("k", PROMPT, ""))
        assert scores.risk.shape == (3,)
        too_long = ResponseRequest("k", 1 << 20, [13], functools.partial(history_of, list(PROMPT)))
        with pytest.raises(SequenceTooLong):
            await backend.score_response(too_long)
    finally:
        await backend.close()


async def test_a_model_that_fails_to_load_is_a_start_error_with_the_reason(tmp_path: Path) -> None:
    engine = EngineProcess(
        {
            "engine": Settings().engine.model_dump(mode="json"),
            "checkpoint": str(tmp_path / "missing"),
            "allow_test_checkpoint": True,
            "log_level": "ERROR",
        }
    )
    with pytest.raises(EngineStartError, match="CheckpointError"):
        await engine.start()
    await engine.close()


def test_scores_and_errors_survive_the_wire() -> None:
    rng = np.random.default_rng(0)
    scores = HeadScores(
        risk=rng.random((4, 3), dtype=np.float32),
        risk_logits=rng.random((4, 3), dtype=np.float32),
        category=np.arange(4, dtype=np.int64),
        category_prob=rng.random(4, dtype=np.float32),
        category_logits=rng.random((4, 9), dtype=np.float32),
    )
    back = decode_scores(orjson.loads(frame(encode_scores(scores))[4:]))
    for name in ("risk", "risk_logits", "category", "category_prob", "category_logits"):
        np.testing.assert_array_equal(getattr(back, name), getattr(scores, name))
    empty = decode_scores(orjson.loads(frame(encode_scores(HeadScores.empty(9)))[4:]))
    assert empty.category_logits.shape == (0, 9)

    too_long = decode_error(encode_error(SequenceTooLong("k", 50, 40)))
    assert isinstance(too_long, SequenceTooLong) and (too_long.key, too_long.tokens, too_long.limit) == ("k", 50, 40)
    assert isinstance(decode_error(encode_error(SchedulerFailed("x"))), SchedulerFailed)
    other = decode_error(encode_error(MemoryError("out of memory")))
    assert isinstance(other, EngineError) and "MemoryError: out of memory" in str(other)
