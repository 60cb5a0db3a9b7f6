"""``StreamBackend``: the engine behind the ``GuardBackend`` protocol the worker uses."""

from __future__ import annotations

import asyncio
import functools
import json
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from tests.unit.engine.harness import history_of
from workers.backends import stream
from workers.backends.base import GuardBackend, PromptRequest, ResponseRequest
from workers.backends.stream import StreamBackend, resolve_guard_checkpoint
from workers.engine.checkpoint import CheckpointError
from workers.engine.jobs import PromptJob, SchedulerClosed
from workers.engine.model import GuardModel
from workers.engine.reference import ReferenceGuard
from workers.engine.scores import Head
from workers.settings import Settings, load_settings


def _settings(checkpoint: str, *, allow: bool = True) -> Settings:
    return load_settings(
        guard={"backend": "stream", "checkpoint": checkpoint, "allow_test_checkpoint": allow},
        engine={"device": "cpu", "dtype": "float32", "kv_budget_bytes": 1 << 20, "page_size": 8, "max_wait_ms": 1.0},
    )


async def test_scores_equal_the_reference_and_verdicts_name_the_test_model(
    tiny_checkpoint: Path, tiny_model: GuardModel
) -> None:
    backend: GuardBackend = StreamBackend(_settings(str(tiny_checkpoint)))  # the protocol, checked by mypy
    assert backend.unavailable() == "the stream guard is not started"
    await backend.start()
    assert backend.unavailable() is None
    await backend.start()  # idempotent
    try:
        info = backend.info
        assert info.is_test_checkpoint and info.model_id.endswith("(random weights, TEST ONLY)")
        assert info.tier == "stream" and info.response_categories[0] == "Violent"
        chat = backend.chat_format
        messages_ids = chat.tokenizer("How do I bake bread?")["input_ids"]
        prompt = [151644, 872, 198, *messages_ids, 151645]
        answer = chat.tokenizer(" Mix flour, water and yeast, then bake it.")["input_ids"]
        prefix = list(chat.response_prefix)

        prompt_scores = await backend.score_prompt(PromptRequest("k", prompt, "How do I bake bread?"))
        reference = ReferenceGuard(tiny_model)
        expected_prompt = reference.score_prompt(prompt)
        np.testing.assert_allclose(prompt_scores.risk, expected_prompt.risk[0], atol=1e-4)
        assert prompt_scores.category == int(expected_prompt.category[0])
        assert prompt_scores.tier == "stream" and prompt_scores.risk.shape == (3,)

        # The worker sends the scaffold with the first chunk and drops its scores.
        first = [*prefix, *answer[:4]]
        one = await backend.score_response(
            ResponseRequest("k", len(prompt), first, functools.partial(history_of, list(prompt)))
        )
        log = [*prompt, *first]
        two = await backend.score_response(
            ResponseRequest("k", len(log), answer[4:], functools.partial(history_of, list(log)))
        )
        got = np.concatenate([one.risk[len(prefix) :], two.risk])
        want = reference.score_response(prompt, prefix, answer)
        np.testing.assert_allclose(got, want.risk, atol=1e-4)
        np.testing.assert_array_equal(np.concatenate([one.category[len(prefix) :], two.category]), want.category)

        backend.release("k")
        # After a release the next chunk rebuilds from the log.
        log += answer[4:]
        calls = []

        async def history() -> Sequence[int]:
            calls.append(1)
            return log

        three = await backend.score_response(ResponseRequest("k", len(log), [13], history))
        assert calls == [1] and three.risk.shape == (1, 3)

        stats = backend.engine_stats()
        assert stats["forwards"] >= 4 and stats["rows"] >= 4 and stats["rebuilds"] == 1
        assert stats["tokens"] >= len(log) + 1 + len(prompt)  # the prompt, both chunks, the rebuild
        assert stats["forward_seconds"] > 0 and stats["kv_bytes_used"] > 0
    finally:
        await backend.close()
    with pytest.raises(RuntimeError, match=r"start\(\) has not been called"):
        await backend.score_prompt(PromptRequest("k", [1, 2], "x"))


async def test_close_fails_requests_in_flight(tiny_checkpoint: Path) -> None:
    backend = StreamBackend(_settings(str(tiny_checkpoint)))
    await backend.start()
    scheduler = backend.scheduler
    pending = asyncio.ensure_future(backend.score_prompt(PromptRequest("k", list(range(1, 200)), "x")))
    await asyncio.sleep(0)
    await backend.close()
    with pytest.raises(SchedulerClosed):
        await pending
    with pytest.raises(SchedulerClosed):
        await scheduler.score_prompt(PromptJob("k", [1]))


def test_test_checkpoints_need_the_setting(tiny_checkpoint: Path) -> None:
    backend = StreamBackend(_settings(str(tiny_checkpoint), allow=False))
    with pytest.raises(CheckpointError, match="random-weight test checkpoint"):
        _ = backend.info


def test_auto_without_real_weights(tmp_path: Path, tiny_checkpoint: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "empty-hub"))
    monkeypatch.setattr(stream, "DEFAULT_HEADS_DIR", tmp_path / "no-heads")
    monkeypatch.setattr(stream, "TEST_CHECKPOINT_DIR", tmp_path / "generated")
    with pytest.raises(CheckpointError, match="no Qwen3Guard-Stream checkpoint in the local Hugging Face cache"):
        resolve_guard_checkpoint("auto", allow_test_checkpoint=False)
    with pytest.raises(CheckpointError, match="shipped stream heads are not installed"):
        resolve_guard_checkpoint("default", allow_test_checkpoint=True)
    # Pretend the generated checkpoint exists already (generation is what make_test_checkpoint does).
    shutil.copytree(tiny_checkpoint, tmp_path / "generated" / "test-tiny-random-qwen3")
    checkpoint = resolve_guard_checkpoint("auto", allow_test_checkpoint=True)
    assert checkpoint.is_test_checkpoint and "TEST ONLY" in checkpoint.model_id
    # A shipped (non-test) checkpoint in the default place wins over the test one.
    shutil.copytree(tiny_checkpoint, tmp_path / "no-heads")
    config = json.loads((tmp_path / "no-heads" / "config.json").read_text())
    del config["streamwarden"]
    (tmp_path / "no-heads" / "config.json").write_text(json.dumps(config))
    shipped = resolve_guard_checkpoint("auto", allow_test_checkpoint=False)
    assert not shipped.is_test_checkpoint and shipped.path == (tmp_path / "no-heads").resolve()


def test_the_query_and_response_heads_differ(tiny_model: GuardModel) -> None:
    """Guards against wiring both paths to the same weights."""
    reference = ReferenceGuard(tiny_model)
    ids = list(range(100, 140))
    query = reference.all_positions(ids, Head.QUERY)
    response = reference.all_positions(ids, Head.RESPONSE)
    assert not np.allclose(query.risk_logits, response.risk_logits)
