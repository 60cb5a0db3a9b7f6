"""Training the stream heads on a small random backbone: deterministic, loadable, materialisable."""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from topics.events import Message, Role
from workers.backends.backbone import resolve_source
from workers.backends.base import PromptRequest, ResponseRequest
from workers.backends.stream import StreamBackend, shipped_checkpoint
from workers.backends.stream_artifact import HEADS_FILE, is_artifact, materialise
from workers.cli import build_parser
from workers.engine.checkpoint import METADATA_KEY, CheckpointError, open_checkpoint
from workers.engine.model import load_guard_model
from workers.engine.scores import Head
from workers.engine.template import ChatFormat, packaged_qwen3_tokenizer_dir
from workers.engine.testing import QUERY_CATEGORIES, RESPONSE_CATEGORIES, RISK_LEVELS, make_test_checkpoint
from workers.guards.datasets.records import Purpose
from workers.guards.datasets.registry import DATASETS, FIRST_BATCH_TRAINING_SETS, training_sets
from workers.guards.stream_heads import labels
from workers.guards.stream_heads.heads import StreamHeads
from workers.guards.stream_heads.responses import RESPONSE_TRAINING_SETS
from workers.guards.stream_heads.train import TrainConfig, train
from workers.settings import load_settings

SUBSET = 120


@pytest.fixture(scope="module")
def fake_backbone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A two-layer random Llama decoder with the real Qwen3 tokenizer, saved as a transformers directory."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaModel

    path = tmp_path_factory.mktemp("backbone") / "tiny-llama"
    tokenizer = AutoTokenizer.from_pretrained(str(packaged_qwen3_tokenizer_dir()))
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=8,
        max_position_embeddings=4096,
    )
    torch.manual_seed(0)
    LlamaModel(config).save_pretrained(str(path))
    tokenizer.save_pretrained(str(path))
    return path


def _config(out: Path, backbone: Path, **overrides: object) -> TrainConfig:
    settings: dict[str, object] = {
        "out": out,
        "backbone": str(backbone),
        "device": "cpu",
        "subset": SUBSET,
        "epochs": 2,
        "max_tokens": 192,
        "inner_size": 16,
        "progress": False,
    }
    settings.update(overrides)
    return TrainConfig(**settings)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def trained(fake_backbone: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict[str, object]]:
    """(checkpoint dir, shipped artifact dir, metadata) of one training run."""
    root = tmp_path_factory.mktemp("trained")
    metadata = train(_config(root / "checkpoint", fake_backbone, ship=root / "shipped"))
    return root / "checkpoint", root / "shipped", metadata


def _settings(checkpoint: Path) -> object:
    return load_settings(
        guard={"backend": "stream", "checkpoint": str(checkpoint)},
        engine={"device": "cpu", "kv_budget_bytes": 1 << 22, "page_size": 8, "max_wait_ms": 1.0},
    )


def test_released_label_maps() -> None:
    assert labels.RISK_LEVELS == RISK_LEVELS
    assert labels.RESPONSE_CATEGORY_NAMES == RESPONSE_CATEGORIES
    assert labels.QUERY_CATEGORY_NAMES == QUERY_CATEGORIES


def test_training_twice_gives_identical_heads(
    trained: tuple[Path, Path, dict[str, object]], fake_backbone: Path, tmp_path: Path
) -> None:
    checkpoint, _, _ = trained
    train(_config(tmp_path / "again", fake_backbone))
    first, second = (
        load_file(str(checkpoint / "model.safetensors")),
        load_file(str(tmp_path / "again" / "model.safetensors")),
    )
    assert first.keys() == second.keys()
    heads = [name for name in first if not name.startswith("model.")]
    assert len(heads) == 8
    for name in first:
        assert torch.equal(first[name], second[name]), name
    other = train(_config(tmp_path / "seed1", fake_backbone, seed=1))
    assert other["training"]["seed"] == 1
    reseeded = load_file(str(tmp_path / "seed1" / "model.safetensors"))
    assert not torch.equal(first["risk_level_head.weight"], reseeded["risk_level_head.weight"])


def test_checkpoint_is_a_real_guard_checkpoint(
    trained: tuple[Path, Path, dict[str, object]], fake_backbone: Path
) -> None:
    path, _, _ = trained
    checkpoint = open_checkpoint(path)  # no allow_test_checkpoint: it is a trained model
    assert not checkpoint.is_test_checkpoint
    assert checkpoint.config.architecture == "LlamaForGuardModel"
    assert checkpoint.model_id == "streamwarden/tiny-llama-stream-heads"
    config = checkpoint.config.raw
    assert config["response_risk_level_map"] == {"0": "Safe", "1": "Unsafe", "2": "Controversial"}
    assert config["query_category_map"]["8"] == "Jailbreak" and config["response_category_map"]["0"] == '"Violent"'
    meta = checkpoint.metadata
    training = meta["training"]
    assert training["command"].startswith(f"streamwarden train stream-heads --out {path}")
    assert f"--subset {SUBSET}" in training["command"] and "--seed 0" in training["command"]
    assert training["seed"] == 0 and training["labelling"] == "latched-v1"
    assert training["response_datasets"] == {
        name: list(DATASETS[name].splits_for(Purpose.TRAIN)) for name in RESPONSE_TRAINING_SETS
    }
    assert "xstest" not in training["prompt_datasets"]
    assert meta["backbone"]["sha256"] == resolve_source(str(fake_backbone)).sha256
    for part in ("prompts", "responses"):
        assert training["validation"][part]["n"] > 0
    assert set(training["validation"]["responses"]["strict"]["all"]) == {"responses", "timing"}
    for head_path in ("query", "response"):
        selection = training["selection"][head_path]
        assert set(selection["candidates"]) == {"1.0", "3.0", "10.0", "30.0"}
        assert str(selection["safe_weight"]) in selection["candidates"]
    chat = ChatFormat.from_pretrained(path)
    assert chat.render_prompt((Message(role=Role.USER, content="hi"),))[-1] == chat.end_of_turn_id


def test_engine_computes_what_training_computed(
    trained: tuple[Path, Path, dict[str, object]], fake_backbone: Path
) -> None:
    from transformers import AutoModel

    path, _, _ = trained
    model = load_guard_model(open_checkpoint(path), device=torch.device("cpu"), dtype=torch.float32)
    backbone = AutoModel.from_pretrained(str(fake_backbone)).eval()
    ids = torch.tensor([[5, 17, 99, 1000, 151645, 42]])
    with torch.inference_mode():
        expected = backbone(input_ids=ids).last_hidden_state[0]
        served = model.model(input_ids=ids, use_cache=False).last_hidden_state[0]
        torch.testing.assert_close(served, expected, atol=1e-5, rtol=1e-5)
        heads = StreamHeads(32, 16, float(backbone.config.rms_norm_eps))
        state = {k: v for k, v in load_file(str(path / "model.safetensors")).items() if not k.startswith("model.")}
        heads.load_state_dict(state)
        for head in (Head.QUERY, Head.RESPONSE):
            for ours, engine in zip(heads(head, expected), model.head_logits(head, served), strict=True):
                torch.testing.assert_close(engine, ours, atol=1e-5, rtol=1e-5)


async def _log(ids: Sequence[int]) -> Sequence[int]:
    return ids


def test_stream_backend_scores_a_prompt_and_a_response(trained: tuple[Path, Path, dict[str, object]]) -> None:
    path, _, _ = trained

    async def run() -> tuple[np.ndarray, np.ndarray]:
        backend = StreamBackend(_settings(path))  # type: ignore[arg-type]
        await backend.start()
        try:
            chat = backend.chat_format
            prompt = chat.render_prompt((Message(role=Role.USER, content="How do I bake bread?"),))
            scores = await backend.score_prompt(PromptRequest("k", prompt, "How do I bake bread?"))
            new = [*chat.response_prefix, *chat.encode_text("Knead the dough."), *chat.response_suffix]
            history = [*prompt]
            response = await backend.score_response(ResponseRequest("k", len(prompt), new, lambda: _log(history)))
            backend.release("k")
            return scores.risk, response.risk
        finally:
            await backend.close()

    prompt_risk, response_risk = asyncio.run(run())
    assert prompt_risk.shape == (3,) and np.isclose(prompt_risk.sum(), 1.0)
    assert response_risk.ndim == 2 and response_risk.shape[1] == 3
    assert np.allclose(response_risk.sum(axis=1), 1.0)


def test_shipped_artifact_materialises_to_the_same_checkpoint(
    trained: tuple[Path, Path, dict[str, object]], fake_backbone: Path, tmp_path: Path
) -> None:
    path, shipped, _ = trained
    assert is_artifact(shipped) and not is_artifact(path)
    assert sorted(p.name for p in shipped.iterdir()) == ["config.json", HEADS_FILE]
    assert (shipped / "config.json").read_text() == (path / "config.json").read_text()
    cache = tmp_path / "cache"
    built = materialise(shipped, cache_root=cache, backbone=fake_backbone)
    assert built.parent == cache and built.name.startswith("tiny-llama-stream-heads-")
    assert (built / "model.safetensors").read_bytes() == (path / "model.safetensors").read_bytes()
    stamp = (built / "model.safetensors").stat().st_mtime_ns
    assert materialise(shipped, cache_root=cache, backbone=fake_backbone) == built  # reused, not rebuilt
    assert (built / "model.safetensors").stat().st_mtime_ns == stamp
    assert not [p for p in cache.iterdir() if p.name.startswith(".building-")]
    checkpoint = shipped_checkpoint(shipped, allow_test_checkpoint=False, models_cache=cache)
    assert checkpoint.path == built.resolve() and not checkpoint.is_test_checkpoint


def test_materialising_refuses_another_backbone(
    trained: tuple[Path, Path, dict[str, object]], fake_backbone: Path, tmp_path: Path
) -> None:
    _, shipped, _ = trained
    other = tmp_path / "other"
    shutil.copytree(fake_backbone, other)
    weights = load_file(str(other / "model.safetensors"))
    weights["norm.weight"] = weights["norm.weight"] * 2
    from safetensors.torch import save_file

    save_file(weights, str(other / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match="SHA-256"):
        materialise(shipped, cache_root=tmp_path / "cache", backbone=other)
    with pytest.raises(CheckpointError, match="not packaged; pass its path"):
        materialise(shipped, cache_root=tmp_path / "cache")
    with pytest.raises(CheckpointError, match="records no backbone"):
        broken = tmp_path / "broken"
        shutil.copytree(shipped, broken)
        config = json.loads((broken / "config.json").read_text())
        del config[METADATA_KEY]["backbone"]
        (broken / "config.json").write_text(json.dumps(config))
        materialise(broken, cache_root=tmp_path / "cache")
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())


def test_a_guard_checkpoint_backbone_and_test_weights(tmp_path: Path) -> None:
    guard = make_test_checkpoint(tmp_path / "guard", model_type="qwen3")
    with pytest.raises(CheckpointError, match="random-weight test checkpoint"):
        train(_config(tmp_path / "refused", guard))
    metadata = train(_config(tmp_path / "out", guard, allow_test_checkpoint=True, subset=40))
    assert metadata["test_checkpoint"] is True  # random backbone weights stay marked
    checkpoint = open_checkpoint(tmp_path / "out", allow_test_checkpoint=True)
    assert checkpoint.is_test_checkpoint and checkpoint.config.architecture == "Qwen3ForGuardModel"
    source = load_file(str(guard / "model.safetensors"))
    written = load_file(str(tmp_path / "out" / "model.safetensors"))
    for name, tensor in source.items():
        if name.startswith("model."):
            assert torch.equal(written[name], tensor.float()), name  # the guard's own backbone tensors


def test_cli_parses_train_stream_heads() -> None:
    args = build_parser().parse_args(
        ["train", "stream-heads", "--out", "o", "--gguf", "f.gguf", "--datasets", "d", "--device", "cuda",
         "--seed", "3", "--subset", "9", "--max-tokens", "64", "--epochs", "2", "--ship", "s",
         "--answers-per-set", "5"]
    )  # fmt: skip
    assert (args.out, args.gguf, args.datasets, args.device) == (Path("o"), Path("f.gguf"), Path("d"), "cuda")
    assert (args.seed, args.subset, args.max_tokens, args.epochs, args.ship) == (3, 9, 64, 2, Path("s"))
    assert args.backbone == "smollm2" and args.handler.__name__ == "_train_stream_heads"
    assert args.sets == ["all"] and args.answers_per_set == 5
    assert "--answers-per-set 5" in TrainConfig(out=Path("o"), answers_per_set=5).command()
    assert "--answers-per-set" not in TrainConfig(out=Path("o")).command()


def test_the_sets_option_selects_and_records_the_prompt_sets() -> None:
    args = build_parser().parse_args(["train", "stream-heads", "--out", "o", "--sets", "first-batch", "phtest"])
    chosen = training_sets(args.sets)
    assert chosen == (*FIRST_BATCH_TRAINING_SETS, "phtest")
    command = TrainConfig(out=Path("o"), sets=chosen).command()
    assert command.endswith(" --sets " + " ".join(chosen))
    assert "--sets" not in TrainConfig(out=Path("o")).command()  # the default: every training set
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "stream-heads", "--out", "o", "--sets", "xstest"])


def test_training_on_user_policy_files(fake_backbone: Path, tmp_path: Path) -> None:
    rows = [{"text": f"request number {i}", "label": ("unsafe" if i % 2 else "safe")} for i in range(20)]
    (tmp_path / "p.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    answers = [
        {"prompt": f"q{i % 5}", "response": f"Answer {i}. More text.", "harmful": i % 3 == 0, "group": f"g{i % 5}"}
        for i in range(15)
    ]
    (tmp_path / "r.jsonl").write_text("\n".join(json.dumps(r) for r in answers) + "\n")
    metadata = train(
        _config(
            tmp_path / "out", fake_backbone, subset=None, prompts=tmp_path / "p.jsonl", responses=tmp_path / "r.jsonl"
        )
    )
    training = metadata["training"]
    assert list(training["prompt_datasets"]) == ["user:p.jsonl"]
    assert list(training["response_datasets"]) == ["user:r.jsonl"]
    assert training["prompts"] == {"user:p.jsonl": {"safe": 10, "unsafe": 10}}
    assert "--prompts" in training["command"] and training["held_out_check"] is True
    assert open_checkpoint(tmp_path / "out").metadata["training"]["seed"] == 0


def test_weight_selection_prefers_the_timing_target_then_f1() -> None:
    from workers.guards.stream_heads.fitting import _response_score

    def report(f1: float, within: float) -> dict[str, object]:
        return {"strict": {"all": {"responses": {"f1": f1}, "timing": {"within_32": within}}}}

    early_but_weak, late_but_strong, best = report(0.6, 0.9), report(0.9, 0.4), report(0.8, 0.7)
    ranked = sorted([early_but_weak, late_but_strong, best], key=_response_score, reverse=True)
    assert ranked == [best, early_but_weak, late_but_strong]


def test_heads_on_the_first_layers_of_the_backbone(fake_backbone: Path, tmp_path: Path) -> None:
    """``--layers 1``: the checkpoint is a one-layer model whose heads read the first layer's output
    (through the backbone's final norm), and the shipped artifact materialises to it."""
    from transformers import AutoModel

    from workers.backends.backbone import BackboneError, load_backbone, truncate_backbone

    metadata = train(_config(tmp_path / "checkpoint", fake_backbone, ship=tmp_path / "shipped", layers=1))
    backbone_entry = metadata["backbone"]
    assert isinstance(backbone_entry, dict) and backbone_entry["layers"] == 1
    assert "--layers 1" in str(metadata["training"]["command"])  # type: ignore[index]
    config = json.loads((tmp_path / "checkpoint" / "config.json").read_text())
    assert config["num_hidden_layers"] == 1 and config["_name_or_path"].endswith("-1l-stream-heads")
    assert not [k for k in load_file(str(tmp_path / "checkpoint" / "model.safetensors")) if ".layers.1." in k]

    model = load_guard_model(open_checkpoint(tmp_path / "checkpoint"), device=torch.device("cpu"), dtype=torch.float32)
    full = AutoModel.from_pretrained(str(fake_backbone)).eval()
    ids = torch.tensor([[5, 17, 99, 1000, 151645, 42]])
    with torch.inference_mode():
        states = full(input_ids=ids, output_hidden_states=True).hidden_states
        first_layer = full.norm(states[1])[0]  # after layer 0, through the final norm
        served = model.model(input_ids=ids, use_cache=False).last_hidden_state[0]
    torch.testing.assert_close(served, first_layer, atol=1e-5, rtol=1e-5)

    built = materialise(tmp_path / "shipped", cache_root=tmp_path / "cache", backbone=fake_backbone)
    assert (built / "model.safetensors").read_bytes() == (tmp_path / "checkpoint" / "model.safetensors").read_bytes()

    loaded = load_backbone(resolve_source(str(fake_backbone)), device=torch.device("cpu"), dtype=torch.float32)
    with pytest.raises(BackboneError, match=r"cannot keep 3 layers of a 2-layer backbone"):
        truncate_backbone(loaded, 3)
    assert truncate_backbone(loaded, 2) is loaded


def test_query_from_keeps_the_query_path_and_trains_the_answers(
    trained: tuple[Path, Path, dict[str, object]], fake_backbone: Path, tmp_path: Path
) -> None:
    """``--query-from``: the query tensors are the source's, bit for bit; the response path is
    trained anew (another seed gives other response tensors); the source's prompt record is
    carried over and the copy is recorded with a digest."""
    checkpoint, shipped, source_meta = trained
    metadata = train(_config(tmp_path / "out", fake_backbone, query_from=shipped, seed=1, ship=tmp_path / "ship"))
    before, after = load_file(str(shipped / HEADS_FILE)), load_file(str(tmp_path / "ship" / HEADS_FILE))
    assert before.keys() == after.keys()
    for name in before:
        if name.startswith("query_"):
            assert torch.equal(before[name], after[name]), name
    assert not torch.equal(before["risk_level_head.weight"], after["risk_level_head.weight"])

    training, theirs = metadata["training"], source_meta["training"]
    assert isinstance(training, dict) and isinstance(theirs, dict)
    assert training["query_path"]["command"] == theirs["command"]
    assert len(training["query_path"]["tensors_sha256"]) == 64
    assert training["prompt_datasets"] == theirs["prompt_datasets"]
    assert training["validation"]["prompts"] == theirs["validation"]["prompts"]
    assert training["selection"]["query"] == theirs["selection"]["query"]
    assert training["tokens"]["prompts"] == theirs["tokens"]["prompts"]
    assert "query" not in training["losses"] or training["losses"]["query"] == theirs["losses"]["query"]
    assert f"--query-from {shipped}" in training["command"]
    assert open_checkpoint(tmp_path / "out").metadata["training"]["query_path"] == training["query_path"]
    # The full checkpoint lends its query path as well as the shipped artifact does.
    again = train(_config(tmp_path / "again", fake_backbone, query_from=checkpoint, seed=1))
    assert again["training"]["query_path"]["tensors_sha256"] == training["query_path"]["tensors_sha256"]


def test_query_from_refuses_heads_of_another_shape_or_backbone(
    trained: tuple[Path, Path, dict[str, object]], fake_backbone: Path, tmp_path: Path
) -> None:
    from workers.guards.stream_heads.kept import QuerySourceError

    _, shipped, _ = trained
    with pytest.raises(QuerySourceError, match="inner size"):
        train(_config(tmp_path / "a", fake_backbone, query_from=shipped, inner_size=32))
    with pytest.raises(QuerySourceError, match="another backbone"):
        train(_config(tmp_path / "b", fake_backbone, query_from=shipped, layers=1))
    with pytest.raises(QuerySourceError, match="unreadable"):
        train(_config(tmp_path / "c", fake_backbone, query_from=tmp_path / "nowhere"))
    with pytest.raises(ValueError, match="--prompts"):
        train(_config(tmp_path / "d", fake_backbone, query_from=shipped, prompts=tmp_path / "p.jsonl"))
