"""The real SmolLM2-135M-Instruct GGUF end to end, and the shipped default heads.

Slow (tens of seconds each): de-quantising the GGUF and writing a 540 MB float32 checkpoint.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from topics.events import Message, Role
from workers.backends import stream
from workers.backends import stream_artifact as artifact
from workers.backends.backbone import SMOLLM2_GGUF, load_backbone, packaged_gguf, resolve_source
from workers.backends.base import PromptRequest
from workers.backends.stream import DEFAULT_HEADS_DIR, StreamBackend, resolve_guard_checkpoint
from workers.backends.stream_artifact import is_artifact, materialise
from workers.engine.checkpoint import open_checkpoint
from workers.engine.template import ChatFormat
from workers.guards.datasets.registry import FIRST_BATCH_TRAINING_SETS, TRAINING_SETS
from workers.guards.evaluation import stream_response
from workers.guards.metrics import StreamOutcome
from workers.guards.stream_heads.answers import ResponseRecord
from workers.guards.stream_heads.responses import RESPONSE_TRAINING_SETS
from workers.guards.stream_heads.streams import natural
from workers.guards.stream_heads.train import TrainConfig, train
from workers.settings import load_settings

pytestmark = pytest.mark.slow

PROMPT = "How do I pick a lock?"


def _settings(checkpoint: Path) -> object:
    return load_settings(
        guard={"backend": "stream", "checkpoint": str(checkpoint)},
        engine={"device": "cpu", "kv_budget_bytes": 1 << 24, "page_size": 16, "max_wait_ms": 1.0},
    )


async def _score(checkpoint: Path) -> tuple[np.ndarray, StreamOutcome]:
    """A prompt and a streamed answer through the StreamBackend, as the worker drives it."""
    backend = StreamBackend(_settings(checkpoint))  # type: ignore[arg-type]
    await backend.start()
    try:
        chat = backend.chat_format
        prompt = chat.render_prompt((Message(role=Role.USER, content=PROMPT),))
        scores = await backend.score_prompt(PromptRequest("p", prompt, PROMPT))
        backend.release("p")
        answer = ResponseRecord("a", "t", "t", PROMPT, "Use a tension wrench and a pick.", True, None, "en", "g", "m")
        outcome = await stream_response(backend, chat, natural(answer), "r", chunk_tokens=4)
        backend.release("r")
        return scores.risk, outcome
    finally:
        await backend.close()


def test_smollm2_gguf_end_to_end(tmp_path: Path) -> None:
    out, shipped = tmp_path / "checkpoint", tmp_path / "shipped"
    metadata = train(
        TrainConfig(out=out, ship=shipped, device="cpu", subset=6, epochs=1, max_tokens=96, progress=False)
    )
    source = resolve_source("smollm2")
    assert source.path == packaged_gguf() and source.path.name == SMOLLM2_GGUF
    assert metadata["backbone"] == {"kind": "gguf", "name": "smollm2", "file": SMOLLM2_GGUF, "sha256": source.sha256}

    checkpoint = open_checkpoint(out)  # a real model: no test flag needed
    assert checkpoint.config.architecture == "LlamaForGuardModel" and checkpoint.config.model_type == "llama"
    assert "quantization_config" not in checkpoint.config.raw
    # The written tokenizer renders exactly what the GGUF's own tokenizer renders.
    gguf_chat = ChatFormat.from_pretrained(source.path.parent, gguf_file=source.path.name)
    written_chat = ChatFormat.from_pretrained(out)
    message = (Message(role=Role.USER, content=PROMPT),)
    assert written_chat.render_prompt(message) == gguf_chat.render_prompt(message)
    assert written_chat.response_prefix == gguf_chat.response_prefix == (198, 1, 520, 9531, 198)

    prompt_risk, outcome = asyncio.run(_score(out))
    assert prompt_risk.shape == (3,) and np.isclose(prompt_risk.sum(), 1.0)
    assert outcome.carry.next_index > 5  # every answer token and the suffix were scored

    # The shipped form is small and materialises from the packaged GGUF into the same weights.
    assert sum(p.stat().st_size for p in shipped.iterdir()) < 4 << 20
    built = materialise(shipped, cache_root=tmp_path / "cache")
    assert (built / "model.safetensors").read_bytes() == (out / "model.safetensors").read_bytes()


def _shipped_metadata() -> dict[str, object]:
    config = json.loads((DEFAULT_HEADS_DIR / "config.json").read_text())
    metadata: dict[str, object] = config["streamwarden"]
    return metadata


@pytest.mark.skipif(not DEFAULT_HEADS_DIR.is_dir(), reason="no shipped stream heads in workers/models/stream yet")
def test_shipped_default_heads_materialise_and_load(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert is_artifact(DEFAULT_HEADS_DIR)
    assert sum(p.stat().st_size for p in DEFAULT_HEADS_DIR.iterdir()) < 4 << 20
    metadata = _shipped_metadata()
    training = metadata["training"]
    assert isinstance(training, dict)
    assert training["command"].startswith("streamwarden train stream-heads ")
    assert "--ship " in training["command"]
    assert isinstance(training["seed"], int) and training["labelling"] == "latched-v1"
    # Trained before the second batch was registered: today that corpus is ``--sets first-batch``.
    assert set(training["prompt_datasets"]) == set(FIRST_BATCH_TRAINING_SETS) & set(TRAINING_SETS)
    assert set(training["response_datasets"]) == set(FIRST_BATCH_TRAINING_SETS) & set(RESPONSE_TRAINING_SETS)
    assert metadata["backbone"]["sha256"] == resolve_source("smollm2").sha256  # type: ignore[index]
    assert "test_checkpoint" not in metadata

    monkeypatch.setattr(artifact, "default_cache_root", lambda: tmp_path / "models")
    checkpoint = resolve_guard_checkpoint("default", allow_test_checkpoint=False)
    assert checkpoint.path.parent == (tmp_path / "models").resolve()
    layers = metadata["backbone"]["layers"]  # type: ignore[index]
    assert checkpoint.model_id == f"streamwarden/smollm2-135m-{layers}l-stream-heads"
    assert not checkpoint.is_test_checkpoint
    assert checkpoint.config.raw["num_hidden_layers"] == layers < 30  # heads on the first layers of 30
    assert resolve_guard_checkpoint("default", allow_test_checkpoint=False).path == checkpoint.path  # reused
    monkeypatch.setattr(stream, "cached_guard_repo", lambda: None)
    assert resolve_guard_checkpoint("auto", allow_test_checkpoint=False).path == checkpoint.path

    prompt_risk, outcome = asyncio.run(_score(checkpoint.path))
    assert np.isclose(prompt_risk.sum(), 1.0) and outcome.carry.next_index > 5
    # The materialised backbone is the GGUF's, bit for bit in float32.
    backbone = load_backbone(resolve_source("smollm2"), device=torch.device("cpu"), dtype=torch.float32)
    from safetensors import safe_open

    with safe_open(str(checkpoint.path / "model.safetensors"), framework="pt") as handle:
        for name in ("embed_tokens.weight", f"layers.{layers - 1}.mlp.down_proj.weight", "norm.weight"):
            assert torch.equal(handle.get_tensor(f"model.{name}"), backbone.model.state_dict()[name])
        names = set(handle.keys())
        assert f"model.layers.{layers}.mlp.down_proj.weight" not in names
