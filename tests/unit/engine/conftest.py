"""Fixtures of the engine tests: tiny random-weight checkpoints written once per test run."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from workers.engine.checkpoint import open_checkpoint
from workers.engine.model import GuardModel, load_guard_model
from workers.engine.testing import make_test_checkpoint


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny Qwen3 test checkpoint (real vocabulary and tokenizer, float32 weights)."""
    return make_test_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny-qwen3")


@pytest.fixture(scope="session")
def tiny_model(tiny_checkpoint: Path) -> GuardModel:
    checkpoint = open_checkpoint(tiny_checkpoint, allow_test_checkpoint=True)
    return load_guard_model(checkpoint, device=torch.device("cpu"), dtype=torch.float32)


@pytest.fixture(scope="session")
def llama_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same shape as ``LlamaForGuardModel`` (streamwarden's heads on a Llama backbone)."""
    return make_test_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny-llama", model_type="llama", seed=1)


@pytest.fixture(scope="session")
def micro_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny checkpoint with a 512-token vocabulary: cheap to copy and rewrite in loader tests."""
    return make_test_checkpoint(tmp_path_factory.mktemp("ckpt") / "micro", overrides={"vocab_size": 512})
