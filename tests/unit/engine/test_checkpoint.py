"""Loading Qwen3Guard-Stream checkpoints: the format, and a precise error for each malformed case."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from topics.events import Risk
from workers.backends.base import RISK_ORDER
from workers.engine.checkpoint import (
    GUARD_SIZE_KEYS,
    CheckpointError,
    open_checkpoint,
    resolve_checkpoint_path,
)
from workers.engine.labels import LABEL_MAP_COUNTS
from workers.engine.model import load_guard_model
from workers.engine.reference import ReferenceGuard
from workers.engine.scores import Head
from workers.engine.testing import RESPONSE_CATEGORIES, make_test_checkpoint

CPU = torch.device("cpu")


def _clone(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    return target


def _edit_config(path: Path, edit: Callable[[dict[str, Any]], None]) -> None:
    config = json.loads((path / "config.json").read_text())
    edit(config)
    (path / "config.json").write_text(json.dumps(config))


def _edit_tensors(path: Path, edit: Callable[[dict[str, torch.Tensor]], object]) -> None:
    tensors = load_file(str(path / "model.safetensors"))
    edit(tensors)
    save_file(tensors, str(path / "model.safetensors"))


def _load(path: Path | str) -> None:
    checkpoint = open_checkpoint(path, allow_test_checkpoint=True)
    load_guard_model(checkpoint, device=CPU, dtype=torch.float32)


def test_the_test_checkpoint_has_the_released_layout(tiny_checkpoint: Path) -> None:
    config = json.loads((tiny_checkpoint / "config.json").read_text())
    assert config["architectures"] == ["Qwen3ForGuardModel"]
    assert config["model_type"] == "qwen3"
    assert config["response_risk_level_map"] == {"0": "Safe", "1": "Unsafe", "2": "Controversial"}
    assert config["response_category_map"]["0"] == '"Violent"'
    assert config["query_category_map"]["8"] == "Jailbreak"
    assert config["streamwarden"]["test_checkpoint"] is True
    assert {"tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt"} <= {
        p.name for p in tiny_checkpoint.iterdir()
    }
    names = set(load_file(str(tiny_checkpoint / "model.safetensors")))
    for prefix in ("", "query_"):
        for part in ("risk_level_category_pre", "risk_level_category_layernorm", "risk_level_head", "category_head"):
            assert f"{prefix}{part}.weight" in names
    assert "model.embed_tokens.weight" in names and "model.norm.weight" in names
    assert "model.layers.1.self_attn.q_norm.weight" in names
    assert not any(name.startswith("lm_head") for name in names)


def test_labels_are_read_from_config_and_normalised(tiny_checkpoint: Path) -> None:
    labels = open_checkpoint(tiny_checkpoint, allow_test_checkpoint=True).config.labels
    assert labels.response.categories[0] == "Violent"
    assert labels.response.categories == tuple(name.strip('"') for name in RESPONSE_CATEGORIES)
    assert labels.query.categories[-1] == "Jailbreak"
    # Released order is Safe, Unsafe, Controversial; canonical is safe, controversial, unsafe.
    assert labels.response.risks == (Risk.SAFE, Risk.UNSAFE, Risk.CONTROVERSIAL)
    assert labels.response.risk_permutation == (0, 2, 1)


def test_scores_follow_the_canonical_risk_order(micro_checkpoint: Path, tmp_path: Path) -> None:
    """Permuting the risk map and the head rows together must not change canonical scores."""
    swapped = _clone(micro_checkpoint, tmp_path / "swapped")

    def swap_map(config: dict[str, Any]) -> None:
        config["response_risk_level_map"] = {"0": "Controversial", "1": "Safe", "2": "Unsafe"}

    def swap_rows(tensors: dict[str, torch.Tensor]) -> None:
        # new index 0 = old Controversial (2), 1 = old Safe (0), 2 = old Unsafe (1)
        tensors["risk_level_head.weight"] = tensors["risk_level_head.weight"][[2, 0, 1]].contiguous()

    _edit_config(swapped, swap_map)
    _edit_tensors(swapped, swap_rows)
    ids = list(range(5, 40))
    original = ReferenceGuard(_model(micro_checkpoint)).all_positions(ids, Head.RESPONSE)
    permuted = ReferenceGuard(_model(swapped)).all_positions(ids, Head.RESPONSE)
    np.testing.assert_allclose(original.risk, permuted.risk, atol=1e-6)
    assert RISK_ORDER == (Risk.SAFE, Risk.CONTROVERSIAL, Risk.UNSAFE)


def _model(path: Path) -> Any:
    return load_guard_model(open_checkpoint(path, allow_test_checkpoint=True), device=CPU, dtype=torch.float32)


def test_test_checkpoints_are_refused_unless_allowed(micro_checkpoint: Path) -> None:
    with pytest.raises(CheckpointError, match="random-weight test checkpoint"):
        open_checkpoint(micro_checkpoint)
    checkpoint = open_checkpoint(micro_checkpoint, allow_test_checkpoint=True)
    assert checkpoint.is_test_checkpoint
    assert "random weights, TEST ONLY" in checkpoint.model_id


def test_a_real_looking_checkpoint_loads_without_the_flag(micro_checkpoint: Path, tmp_path: Path) -> None:
    path = _clone(micro_checkpoint, tmp_path / "plain")
    _edit_config(path, lambda c: c.pop("streamwarden"))
    checkpoint = open_checkpoint(path)
    assert not checkpoint.is_test_checkpoint
    assert checkpoint.model_id == "plain"
    assert len(checkpoint.revision) == 12


def test_remote_code_is_never_executed(micro_checkpoint: Path, tmp_path: Path) -> None:
    path = _clone(micro_checkpoint, tmp_path / "remote")
    marker = tmp_path / "executed"
    (path / "modeling_qwen3_guard.py").write_text(f"open({str(marker)!r}, 'w').write('x')\n")
    (path / "configuration_qwen3.py").write_text(f"open({str(marker)!r}, 'w').write('x')\n")
    _load(path)
    assert not marker.exists()


def test_sharded_weights_load_like_a_single_file(tmp_path: Path) -> None:
    single = make_test_checkpoint(tmp_path / "single", overrides={"vocab_size": 512})
    sharded = make_test_checkpoint(tmp_path / "sharded", overrides={"vocab_size": 512}, max_shard_bytes=64_000)
    assert (sharded / "model.safetensors.index.json").is_file()
    assert len(list(sharded.glob("model-*-of-*.safetensors"))) > 1
    ids = list(range(3, 30))
    a = ReferenceGuard(_model(single)).all_positions(ids, Head.QUERY)
    b = ReferenceGuard(_model(sharded)).all_positions(ids, Head.QUERY)
    np.testing.assert_array_equal(a.risk_logits, b.risk_logits)


def test_the_llama_backbone_loads(llama_checkpoint: Path) -> None:
    model = _model(llama_checkpoint)
    assert type(model.model).__name__ == "LlamaModel"
    assert len(ReferenceGuard(model).all_positions([1, 2, 3], Head.RESPONSE)) == 3


# -- malformed checkpoints: one precise reason each ------------------------------------------------


def _drop_key(key: str) -> Callable[[dict[str, Any]], None]:
    return lambda config: config.pop(key)


def _set_key(key: str, value: object) -> Callable[[dict[str, Any]], None]:
    return lambda config: config.__setitem__(key, value)


CONFIG_CASES: list[tuple[str, Callable[[dict[str, Any]], None], str]] = [
    ("no-architectures", _drop_key("architectures"), "config lacks architectures"),
    ("foreign-architecture", _set_key("architectures", ["Qwen3ForCausalLM"]), "name no guard model"),
    ("no-model-type", _drop_key("model_type"), "config lacks model_type"),
    ("unknown-model-type", _set_key("model_type", "qwen99"), "unknown model_type 'qwen99'"),
    ("mismatched-model-type", _set_key("model_type", "llama"), "needs model_type 'qwen3', got 'llama'"),
    ("risk-levels-not-3", _set_key("num_risk_level", 4), "num_risk_level must be 3"),
    ("bad-size", _set_key("guard_inner_size", "big"), "guard_inner_size must be a positive integer"),
    (
        "short-category-map",
        _set_key("response_category_map", {"0": "Violent"}),
        "response_category_map must have keys 0..7",
    ),
    (
        "unknown-risk",
        _set_key("query_risk_level_map", {"0": "Safe", "1": "Risky", "2": "Controversial"}),
        "query_risk_level_map has unknown risk level 'Risky'",
    ),
    (
        "duplicate-risk",
        _set_key("response_risk_level_map", {"0": "Safe", "1": "Unsafe", "2": "Unsafe"}),
        "must name Safe, Unsafe and Controversial once each",
    ),
    ("empty-label", _set_key("query_category_map", {str(i): "" for i in range(9)}), "must be a non-empty string"),
    ("bad-backbone", _set_key("hidden_act", "no-such-activation"), "cannot build the qwen3 backbone"),
]
CONFIG_CASES += [(f"no-{key}", _drop_key(key), f"config lacks {key}") for key in GUARD_SIZE_KEYS]
CONFIG_CASES += [(f"no-{key}", _drop_key(key), f"config lacks {key}") for key in LABEL_MAP_COUNTS]


@pytest.mark.parametrize(("edit", "reason"), [case[1:] for case in CONFIG_CASES], ids=[c[0] for c in CONFIG_CASES])
def test_malformed_config_is_rejected_with_its_reason(
    micro_checkpoint: Path, tmp_path: Path, edit: Callable[[dict[str, Any]], None], reason: str
) -> None:
    path = _clone(micro_checkpoint, tmp_path / "bad")
    _edit_config(path, edit)
    with pytest.raises(CheckpointError) as info:
        _load(path)
    assert str(info.value).startswith(str(path))
    assert reason in str(info.value)


TENSOR_CASES: list[tuple[str, Callable[[dict[str, torch.Tensor]], object], str]] = [
    (
        "missing-head",
        lambda t: t.pop("query_category_head.weight"),
        "missing tensor query_category_head.weight",
    ),
    (
        "missing-layer",
        lambda t: t.pop("model.layers.1.mlp.down_proj.weight"),
        "missing tensor model.layers.1.mlp.down_proj.weight",
    ),
    (
        "wrong-shape",
        lambda t: t.__setitem__("risk_level_head.weight", torch.zeros(3, 16)),
        "tensor risk_level_head.weight has shape [3, 16], expected [3, 32]",
    ),
    (
        "config-disagrees",
        lambda t: t.__setitem__("model.norm.weight", torch.ones(65)),
        "tensor model.norm.weight has shape [65], expected [64]",
    ),
    ("unexpected", lambda t: t.__setitem__("lm_head.weight", torch.zeros(512, 64)), "unexpected tensor lm_head.weight"),
]


@pytest.mark.parametrize(("edit", "reason"), [case[1:] for case in TENSOR_CASES], ids=[c[0] for c in TENSOR_CASES])
def test_malformed_tensors_are_rejected_with_their_reason(
    micro_checkpoint: Path, tmp_path: Path, edit: Callable[[dict[str, torch.Tensor]], object], reason: str
) -> None:
    path = _clone(micro_checkpoint, tmp_path / "bad")
    _edit_tensors(path, edit)
    with pytest.raises(CheckpointError) as info:
        _load(path)
    assert reason in str(info.value)


def test_missing_config_is_rejected(micro_checkpoint: Path, tmp_path: Path) -> None:
    path = _clone(micro_checkpoint, tmp_path / "bad")
    (path / "config.json").unlink()
    with pytest.raises(CheckpointError, match=re.escape("no config.json")):
        _load(path)


def test_invalid_json_is_rejected(micro_checkpoint: Path, tmp_path: Path) -> None:
    path = _clone(micro_checkpoint, tmp_path / "bad")
    (path / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match=re.escape("config.json is not valid JSON")):
        _load(path)


def test_missing_weights_are_rejected(micro_checkpoint: Path, tmp_path: Path) -> None:
    path = _clone(micro_checkpoint, tmp_path / "bad")
    (path / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match=re.escape("no weights: neither model.safetensors nor")):
        _load(path)


def test_corrupt_weights_are_rejected(micro_checkpoint: Path, tmp_path: Path) -> None:
    path = _clone(micro_checkpoint, tmp_path / "bad")
    (path / "model.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        _load(path)


def test_missing_shard_is_rejected(tmp_path: Path) -> None:
    path = make_test_checkpoint(tmp_path / "sharded", overrides={"vocab_size": 512}, max_shard_bytes=64_000)
    shard = sorted(path.glob("model-*-of-*.safetensors"))[-1]
    shard.unlink()
    with pytest.raises(CheckpointError, match=re.escape(f"shard {shard.name} listed in model.safetensors.index.json")):
        _load(path)


def test_missing_tokenizer_is_rejected(micro_checkpoint: Path, tmp_path: Path) -> None:
    path = _clone(micro_checkpoint, tmp_path / "bad")
    (path / "tokenizer.json").unlink()
    with pytest.raises(CheckpointError, match=re.escape("missing tokenizer file tokenizer.json")):
        _load(path)


def test_unknown_directory_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="no such checkpoint directory"):
        resolve_checkpoint_path(tmp_path / "nowhere")


# -- the Hugging Face cache ----------------------------------------------------------------------


def _fake_hub_cache(root: Path, repo: str, source: Path, commit: str) -> None:
    folder = root / f"models--{repo.replace('/', '--')}"
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text(commit)
    shutil.copytree(source, folder / "snapshots" / commit)


def test_hub_ids_resolve_from_the_local_cache_only(
    micro_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import huggingface_hub.constants

    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    with pytest.raises(CheckpointError, match="not in the local Hugging Face cache"):
        open_checkpoint("Qwen/Qwen3Guard-Stream-0.6B", allow_test_checkpoint=True)
    commit = "0123456789abcdef0123456789abcdef01234567"
    _fake_hub_cache(cache, "Qwen/Qwen3Guard-Stream-0.6B", micro_checkpoint, commit)
    checkpoint = open_checkpoint("Qwen/Qwen3Guard-Stream-0.6B", allow_test_checkpoint=True)
    assert checkpoint.path.name == commit
    assert checkpoint.revision == commit
    assert checkpoint.path.parent.parent.name == "models--Qwen--Qwen3Guard-Stream-0.6B"
