"""The Qwen3Guard-Stream checkpoint format: resolution, validation and the writer.

A checkpoint is a directory holding

- ``config.json``: the backbone's transformers config keys (``model_type`` picks the class, e.g.
  ``qwen3`` or ``llama``), ``architectures`` (``Qwen3ForGuardModel`` / ``LlamaForGuardModel``),
  ``guard_inner_size``, ``num_risk_level``, ``num_category``, ``num_query_risk_level``,
  ``num_query_category`` and the four string-keyed label maps (see ``labels``). Our own metadata
  lives under ``"streamwarden"``; test checkpoints carry ``{"test_checkpoint": true}`` there.
- ``model.safetensors``, or shards listed by ``model.safetensors.index.json``: backbone tensors
  prefixed ``model.`` and the head tensors named in ``HEAD_TENSORS``.
- tokenizer files (``tokenizer.json``, ``tokenizer_config.json`` with the chat template, ...).

Released checkpoints also carry ``auto_map`` and remote-code ``.py`` files; they are ignored and
never executed. Every problem raises ``CheckpointError`` naming the path and what is wrong.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from workers.engine.labels import LabelMapError, LabelMaps

if TYPE_CHECKING:
    import torch
    from transformers import PretrainedConfig

logger = logging.getLogger(__name__)

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
WEIGHTS_INDEX_NAME = "model.safetensors.index.json"
TOKENIZER_FILES: tuple[str, ...] = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt")
REQUIRED_TOKENIZER_FILES: tuple[str, ...] = ("tokenizer.json", "tokenizer_config.json")
METADATA_KEY = "streamwarden"
BACKBONE_PREFIX = "model."

GUARD_ARCHITECTURES: Mapping[str, str] = {"Qwen3ForGuardModel": "qwen3", "LlamaForGuardModel": "llama"}
"""Known guard architectures and the ``model_type`` each requires."""

GUARD_SIZE_KEYS: tuple[str, ...] = (
    "guard_inner_size",
    "num_risk_level",
    "num_category",
    "num_query_risk_level",
    "num_query_category",
)
HEAD_PATHS: tuple[str, str] = ("", "query_")
"""Tensor-name prefixes of the response path and the query path."""
HEAD_TENSORS: tuple[str, ...] = (
    "risk_level_category_pre",
    "risk_level_category_layernorm",
    "risk_level_head",
    "category_head",
)
_NON_BACKBONE_KEYS = frozenset(
    {*GUARD_SIZE_KEYS, "architectures", "auto_map", METADATA_KEY, "response_risk_level_map",
     "response_category_map", "query_risk_level_map", "query_category_map", "model_type",
     "transformers_version", "_name_or_path"}
)  # fmt: skip

QWEN3_GUARD_REPOS: tuple[str, ...] = (
    "Qwen/Qwen3Guard-Stream-8B",
    "Qwen/Qwen3Guard-Stream-4B",
    "Qwen/Qwen3Guard-Stream-0.6B",
)
"""Released Stream checkpoints, in the order ``auto`` prefers them when several are cached."""


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message names the path and the exact problem."""

    def __init__(self, path: Path | str, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = str(path)
        self.problem = problem


def head_tensor_shapes(hidden_size: int, config: Mapping[str, Any]) -> dict[str, tuple[int, ...]]:
    """Expected name and shape of every head tensor, from the guard size keys of ``config``."""
    inner = int(config["guard_inner_size"])
    shapes: dict[str, tuple[int, ...]] = {}
    for prefix, risk_key, category_key in (
        ("", "num_risk_level", "num_category"),
        ("query_", "num_query_risk_level", "num_query_category"),
    ):
        shapes[f"{prefix}risk_level_category_pre.weight"] = (inner, hidden_size)
        shapes[f"{prefix}risk_level_category_layernorm.weight"] = (inner,)
        shapes[f"{prefix}risk_level_head.weight"] = (int(config[risk_key]), inner)
        shapes[f"{prefix}category_head.weight"] = (int(config[category_key]), inner)
    return shapes


@dataclass(frozen=True)
class GuardConfig:
    """A validated guard ``config.json``."""

    path: Path
    raw: Mapping[str, Any]
    architecture: str
    model_type: str
    labels: LabelMaps
    metadata: Mapping[str, Any]

    @property
    def guard_inner_size(self) -> int:
        return int(self.raw["guard_inner_size"])

    @property
    def rms_norm_eps(self) -> float:
        return float(self.raw.get("rms_norm_eps", 1e-6))

    @property
    def is_test_checkpoint(self) -> bool:
        return bool(self.metadata.get("test_checkpoint", False))

    def backbone_config(self) -> PretrainedConfig:
        """The transformers config of the backbone (``CONFIG_MAPPING[model_type]``), no remote code."""
        from transformers.models.auto.configuration_auto import CONFIG_MAPPING

        config_class = CONFIG_MAPPING[self.model_type]
        kwargs = {key: value for key, value in self.raw.items() if key not in _NON_BACKBONE_KEYS}
        try:
            return config_class(**kwargs)
        except (TypeError, ValueError) as exc:
            raise CheckpointError(self.path, f"invalid {self.model_type} backbone config: {exc}") from exc

    @classmethod
    def read(cls, path: Path) -> GuardConfig:
        """Read and validate ``path/config.json``.

        Raises:
            CheckpointError: the file is missing or unreadable, or a required key is missing or wrong.
        """
        config_file = path / CONFIG_NAME
        if not config_file.is_file():
            raise CheckpointError(path, f"no {CONFIG_NAME}")
        try:
            raw = json.loads(config_file.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise CheckpointError(path, f"{CONFIG_NAME} is not valid JSON: {exc}") from exc
        if not isinstance(raw, dict):
            raise CheckpointError(path, f"{CONFIG_NAME} must hold a JSON object")
        architecture = _architecture(path, raw)
        model_type = _model_type(path, raw, architecture)
        for key in GUARD_SIZE_KEYS:
            value = raw.get(key)
            if key not in raw:
                raise CheckpointError(path, f"config lacks {key}")
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise CheckpointError(path, f"config key {key} must be a positive integer, got {value!r}")
        for key in ("num_risk_level", "num_query_risk_level"):
            if raw[key] != 3:
                raise CheckpointError(path, f"config key {key} must be 3 (Safe, Unsafe, Controversial)")
        try:
            labels = LabelMaps.from_config(raw)
        except LabelMapError as exc:
            raise CheckpointError(path, str(exc)) from exc
        metadata = raw.get(METADATA_KEY, {})
        if not isinstance(metadata, dict):
            raise CheckpointError(path, f"config key {METADATA_KEY} must be an object")
        return cls(path, raw, architecture, model_type, labels, metadata)


def _architecture(path: Path, raw: Mapping[str, Any]) -> str:
    architectures = raw.get("architectures")
    if not isinstance(architectures, list) or not architectures:
        raise CheckpointError(path, "config lacks architectures")
    known = [name for name in architectures if name in GUARD_ARCHITECTURES]
    if not known:
        raise CheckpointError(
            path,
            f"architectures {architectures} name no guard model; expected one of {sorted(GUARD_ARCHITECTURES)}",
        )
    return str(known[0])


def _model_type(path: Path, raw: Mapping[str, Any], architecture: str) -> str:
    # Checked against the guard architectures' own model types (decoders every supported
    # transformers release has), not transformers' registry: opening a checkpoint to find its
    # path and labels must not import transformers and torch (seconds, before the engine starts).
    model_type = raw.get("model_type")
    if not isinstance(model_type, str):
        raise CheckpointError(path, "config lacks model_type")
    if model_type not in GUARD_ARCHITECTURES.values():
        known = sorted(set(GUARD_ARCHITECTURES.values()))
        raise CheckpointError(path, f"unknown model_type {model_type!r} (the engine runs {', '.join(known)})")
    expected = GUARD_ARCHITECTURES[architecture]
    if model_type != expected:
        raise CheckpointError(path, f"architecture {architecture} needs model_type {expected!r}, got {model_type!r}")
    return model_type


@dataclass(frozen=True)
class Checkpoint:
    """A resolved, validated checkpoint directory (weights not loaded yet)."""

    path: Path
    config: GuardConfig
    tensor_files: Mapping[str, Path]
    """Shard file of every tensor name."""
    model_id: str
    revision: str
    has_tokenizer: bool
    metadata: Mapping[str, Any] = field(default_factory=dict)

    @property
    def is_test_checkpoint(self) -> bool:
        return self.config.is_test_checkpoint

    def tensor_shapes(self) -> dict[str, tuple[int, ...]]:
        """Name and shape of every stored tensor, read from the safetensors headers only."""
        from safetensors import safe_open

        shapes: dict[str, tuple[int, ...]] = {}
        by_file: dict[Path, list[str]] = {}
        for name, file in self.tensor_files.items():
            by_file.setdefault(file, []).append(name)
        for file, names in by_file.items():
            with safe_open(str(file), framework="pt") as handle:
                for name in names:
                    shapes[name] = tuple(handle.get_slice(name).get_shape())
        return shapes

    def check_tensors(self, expected: Mapping[str, tuple[int, ...]]) -> None:
        """Compare stored tensors with ``expected`` (name -> shape).

        Raises:
            CheckpointError: a tensor is missing, has the wrong shape, or is not expected.
        """
        stored = self.tensor_shapes()
        for name, shape in expected.items():
            if name not in stored:
                raise CheckpointError(self.path, f"missing tensor {name}")
            if stored[name] != tuple(shape):
                raise CheckpointError(
                    self.path, f"tensor {name} has shape {list(stored[name])}, expected {list(shape)}"
                )
        unexpected = sorted(set(stored) - set(expected))
        if unexpected:
            raise CheckpointError(self.path, f"unexpected tensor {unexpected[0]} ({len(unexpected)} unexpected)")

    def load_tensors(self, names: list[str], device: torch.device, dtype: torch.dtype) -> dict[str, torch.Tensor]:
        """Read ``names`` from their shards onto ``device`` in ``dtype``."""
        from safetensors import safe_open

        tensors = {}
        by_file: dict[Path, list[str]] = {}
        for name in names:
            by_file.setdefault(self.tensor_files[name], []).append(name)
        for file, file_names in by_file.items():
            with safe_open(str(file), framework="pt", device=str(device)) as handle:
                for name in file_names:
                    tensors[name] = handle.get_tensor(name).to(dtype)
        return tensors


def open_checkpoint(
    reference: str | Path, *, allow_test_checkpoint: bool = False, require_tokenizer: bool = True
) -> Checkpoint:
    """Resolve ``reference`` (a directory or a Hugging Face id in the local cache) and validate it.

    Validates the config, the label maps, the weight files and (when ``require_tokenizer``) the
    tokenizer files. Tensor shapes are checked by the loader against the model built from config.

    Raises:
        CheckpointError: the checkpoint cannot be found or is malformed, or it is a random-weight
            test checkpoint and ``allow_test_checkpoint`` is false.
    """
    path, repo_id, revision = resolve_checkpoint_path(reference)
    config = GuardConfig.read(path)
    if config.is_test_checkpoint and not allow_test_checkpoint:
        raise CheckpointError(
            path,
            "is a random-weight test checkpoint; it is refused unless allow_test_checkpoint is set "
            "(setting guard.allow_test_checkpoint, for tests and benchmarks only)",
        )
    tensor_files = _tensor_files(path)
    has_tokenizer = all((path / name).is_file() for name in REQUIRED_TOKENIZER_FILES)
    if require_tokenizer and not has_tokenizer:
        missing = [name for name in REQUIRED_TOKENIZER_FILES if not (path / name).is_file()]
        raise CheckpointError(path, f"missing tokenizer file {missing[0]}")
    if config.is_test_checkpoint:
        name = str(config.metadata.get("name", "test-random"))
        model_id = f"streamwarden/{name} (random weights, TEST ONLY)"
    else:
        model_id = repo_id or str(config.raw.get("_name_or_path") or path.name)
    return Checkpoint(
        path=path,
        config=config,
        tensor_files=tensor_files,
        model_id=model_id,
        revision=revision or _content_revision(path),
        has_tokenizer=has_tokenizer,
        metadata=config.metadata,
    )


def resolve_checkpoint_path(reference: str | Path) -> tuple[Path, str | None, str | None]:
    """Return ``(directory, hub id or None, hub revision or None)`` for a directory or a hub id.

    Hub ids are resolved from the local Hugging Face cache only; nothing is downloaded.
    """
    path = Path(reference).expanduser()
    if path.is_dir():
        return path.resolve(), None, None
    text = str(reference)
    if text.count("/") != 1 or path.exists() or text.startswith((".", "/", "~")):
        raise CheckpointError(text, "no such checkpoint directory")
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        snapshot = Path(snapshot_download(text, local_files_only=True))
    except (LocalEntryNotFoundError, FileNotFoundError, ValueError) as exc:
        raise CheckpointError(
            text, f"not a directory and not in the local Hugging Face cache (nothing is downloaded): {exc}"
        ) from exc
    return snapshot, text, snapshot.name


def cached_guard_repo() -> str | None:
    """The first released Stream checkpoint present in the local Hugging Face cache, if any."""
    for repo in QWEN3_GUARD_REPOS:
        try:
            resolve_checkpoint_path(repo)
        except CheckpointError:
            continue
        return repo
    return None


def _tensor_files(path: Path) -> dict[str, Path]:
    single = path / WEIGHTS_NAME
    index = path / WEIGHTS_INDEX_NAME
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as exc:
            raise CheckpointError(path, f"{WEIGHTS_INDEX_NAME} is malformed: {exc}") from exc
        if not isinstance(weight_map, dict) or not weight_map:
            raise CheckpointError(path, f"{WEIGHTS_INDEX_NAME} has an empty weight_map")
        files = {}
        for name, shard in weight_map.items():
            shard_path = path / str(shard)
            if not shard_path.is_file():
                raise CheckpointError(path, f"shard {shard} listed in {WEIGHTS_INDEX_NAME} is missing")
            files[str(name)] = shard_path
        return files
    if not single.is_file():
        raise CheckpointError(path, f"no weights: neither {WEIGHTS_NAME} nor {WEIGHTS_INDEX_NAME}")
    from safetensors import safe_open

    try:
        # The header alone is read, so the framework does not matter: numpy keeps torch unimported.
        with safe_open(str(single), framework="numpy") as handle:
            names = list(handle.keys())
    except Exception as exc:  # safetensors raises its own error types for corrupt headers
        raise CheckpointError(path, f"{WEIGHTS_NAME} is not a readable safetensors file: {exc}") from exc
    return dict.fromkeys(names, single)


def _content_revision(path: Path) -> str:
    """A short digest of the config and weight file sizes, standing in for a hub revision."""
    digest = hashlib.sha256((path / CONFIG_NAME).read_bytes())
    for file in sorted(path.glob("*.safetensors")):
        digest.update(f"{file.name}:{file.stat().st_size}".encode())
    return digest.hexdigest()[:12]


def write_checkpoint(
    out: Path,
    config: Mapping[str, Any],
    tensors: Mapping[str, torch.Tensor],
    *,
    tokenizer_dir: Path | None,
    max_shard_bytes: int | None = None,
) -> Path:
    """Write a checkpoint directory in the Qwen3Guard-Stream layout and return its path.

    ``tensors`` are saved as given (names included); with ``max_shard_bytes`` they are split into
    ``model-0000i-of-0000n.safetensors`` shards plus ``model.safetensors.index.json``.
    """
    from safetensors.torch import save_file

    out.mkdir(parents=True, exist_ok=True)
    (out / CONFIG_NAME).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    contiguous = {name: tensor.detach().contiguous().cpu() for name, tensor in tensors.items()}
    if max_shard_bytes is None:
        save_file(contiguous, str(out / WEIGHTS_NAME), metadata={"format": "pt"})
    else:
        shards: list[dict[str, torch.Tensor]] = [{}]
        size = 0
        for name, tensor in contiguous.items():
            nbytes = tensor.numel() * tensor.element_size()
            if shards[-1] and size + nbytes > max_shard_bytes:
                shards.append({})
                size = 0
            shards[-1][name] = tensor
            size += nbytes
        weight_map = {}
        for number, shard in enumerate(shards, start=1):
            file_name = f"model-{number:05d}-of-{len(shards):05d}.safetensors"
            save_file(shard, str(out / file_name), metadata={"format": "pt"})
            weight_map.update(dict.fromkeys(shard, file_name))
        total = sum(t.numel() * t.element_size() for t in contiguous.values())
        index = {"metadata": {"total_size": total}, "weight_map": weight_map}
        (out / WEIGHTS_INDEX_NAME).write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")
    if tokenizer_dir is not None:
        for name in TOKENIZER_FILES:
            source = tokenizer_dir / name
            if source.is_file():
                shutil.copyfile(source, out / name)
    logger.info("wrote checkpoint %s (%d tensors)", out, len(contiguous))
    return out
