"""Trained heads on disk: the full checkpoint, the small shipped artifact, and materialisation.

- ``write_checkpoint_dir``: a complete Qwen3Guard-Stream-format checkpoint (``config.json``,
  backbone tensors ``model.*`` plus the eight head tensors in ``model.safetensors``, the
  backbone's tokenizer with its chat template), which ``open_checkpoint`` accepts as a real model.
- ``write_artifact``: what ships in the package (``workers/models/stream``): the same
  ``config.json`` and ``heads.safetensors`` (the head tensors only), a few hundred kB to a few MB.
  The backbone is not copied: ``config.json`` names it and records its SHA-256.
- ``materialise``: the artifact plus its backbone, checked against that SHA-256, written once as
  a full checkpoint under a cache directory (``<name>-<digest of the artifact>``), atomically
  (built beside it, then renamed into place), and reused afterwards.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from workers.backends.backbone import (
    SMOLLM2,
    BackboneError,
    BackboneSource,
    sha256_files,
    truncate_backbone,
)
from workers.engine.checkpoint import (
    BACKBONE_PREFIX,
    CONFIG_NAME,
    METADATA_KEY,
    WEIGHTS_INDEX_NAME,
    WEIGHTS_NAME,
    CheckpointError,
    write_checkpoint,
)

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedTokenizerBase

logger = logging.getLogger(__name__)

HEADS_FILE = "heads.safetensors"


def default_cache_root() -> Path:
    """``~/.cache/streamwarden/models``: where shipped artifacts are materialised by default."""
    return Path.home() / ".cache" / "streamwarden" / "models"


def _config_text(config: Mapping[str, Any]) -> str:
    return json.dumps(config, indent=2, sort_keys=True) + "\n"


def write_checkpoint_dir(
    out: Path,
    config: Mapping[str, Any],
    backbone_state: Mapping[str, torch.Tensor],
    head_state: Mapping[str, torch.Tensor],
    tokenizer: PreTrainedTokenizerBase,
) -> Path:
    """Write a complete checkpoint: config, backbone (prefixed ``model.``) and head tensors, tokenizer."""
    tensors = {f"{BACKBONE_PREFIX}{name}": tensor for name, tensor in backbone_state.items()}
    tensors.update(head_state)
    write_checkpoint(out, config, tensors, tokenizer_dir=None)
    # save_pretrained writes the chat template too (chat_template.jinja in transformers 5).
    tokenizer.save_pretrained(str(out))
    return out


def write_artifact(out: Path, config: Mapping[str, Any], head_state: Mapping[str, torch.Tensor]) -> Path:
    """Write the shipped form: ``config.json`` and ``heads.safetensors``; returns ``out``."""
    from safetensors.torch import save_file

    out.mkdir(parents=True, exist_ok=True)
    (out / CONFIG_NAME).write_text(_config_text(config), encoding="utf-8")
    tensors = {name: tensor.detach().contiguous().cpu() for name, tensor in head_state.items()}
    save_file(tensors, str(out / HEADS_FILE), metadata={"format": "pt"})
    logger.info("wrote the shipped heads to %s", out)
    return out


def is_artifact(path: Path) -> bool:
    """Whether ``path`` holds a shipped artifact (heads only) rather than a full checkpoint."""
    has_weights = (path / WEIGHTS_NAME).is_file() or (path / WEIGHTS_INDEX_NAME).is_file()
    return (path / HEADS_FILE).is_file() and not has_weights


def _read_artifact(artifact: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """The artifact's config and its recorded backbone entry."""
    try:
        config = json.loads((artifact / CONFIG_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CheckpointError(artifact, f"unreadable {CONFIG_NAME}: {exc}") from exc
    metadata = config.get(METADATA_KEY) if isinstance(config, dict) else None
    backbone = metadata.get("backbone") if isinstance(metadata, dict) else None
    if not isinstance(backbone, dict) or not {"kind", "sha256", "file"} <= backbone.keys():
        raise CheckpointError(artifact, f"not a stream-heads artifact: {CONFIG_NAME} records no backbone")
    return config, backbone


def materialised_path(artifact: Path, cache_root: Path) -> Path:
    """Where ``artifact`` is materialised: ``<cache_root>/<name>-<12 hex of its files' SHA-256>``."""
    config, _ = _read_artifact(artifact)
    name = str(config[METADATA_KEY].get("name", "stream-heads"))
    digest = sha256_files([artifact / CONFIG_NAME, artifact / HEADS_FILE])[:12]
    return cache_root / f"{name}-{digest}"


def _locate_backbone(artifact: Path, entry: Mapping[str, Any], backbone: Path | None) -> BackboneSource:
    """The backbone the artifact was trained on, checked against its recorded SHA-256."""
    from workers.backends.backbone import packaged_gguf, weight_files

    kind = entry["kind"]
    if backbone is not None:
        path = backbone
    elif kind == "gguf" and entry.get("name") == SMOLLM2:
        try:
            path = packaged_gguf()
        except BackboneError as exc:
            raise CheckpointError(artifact, f"cannot materialise the shipped heads: {exc}") from exc
    else:
        raise CheckpointError(artifact, f"the {kind} backbone {entry.get('name')!r} is not packaged; pass its path")
    if kind == "gguf":
        if not path.is_file():
            raise CheckpointError(artifact, f"backbone GGUF {path} is missing")
        digest = sha256_files([path])
    else:
        try:
            digest = sha256_files(weight_files(path))
        except BackboneError as exc:
            raise CheckpointError(artifact, str(exc)) from exc
    if digest != entry["sha256"]:
        raise CheckpointError(
            artifact,
            f"backbone {path} has SHA-256 {digest}, but the heads were trained on {entry['file']} with SHA-256 "
            f"{entry['sha256']}; install the matching backbone (or retrain the heads on this one)",
        )
    return BackboneSource(kind, path.resolve(), digest, str(entry.get("name", path)))


def materialise(artifact: Path, *, cache_root: Path | None = None, backbone: Path | None = None) -> Path:
    """The full checkpoint of a shipped artifact, built on first use and reused afterwards.

    Args:
        artifact: directory with ``config.json`` and ``heads.safetensors``.
        cache_root: where materialised checkpoints live (``default_cache_root()``).
        backbone: the backbone file or directory; by default the packaged SmolLM2 GGUF when the
            artifact names it.

    Raises:
        CheckpointError: the artifact is malformed, the backbone is missing, or it is not the
            backbone (SHA-256) the heads were trained on.
    """
    root = cache_root if cache_root is not None else default_cache_root()
    target = materialised_path(artifact, root)
    if (target / CONFIG_NAME).is_file():
        return target  # the usual case: no torch import needed to find it
    import torch
    from safetensors.torch import load_file

    from workers.backends.backbone import load_backbone

    config, entry = _read_artifact(artifact)
    source = _locate_backbone(artifact, entry, backbone)
    allow_test = bool(config[METADATA_KEY].get("test_checkpoint", False))
    loaded = load_backbone(source, device=torch.device("cpu"), dtype=torch.float32, allow_test_checkpoint=allow_test)
    if entry.get("layers") is not None:  # the heads read an inner layer: cut the backbone as in training
        try:
            loaded = truncate_backbone(loaded, int(entry["layers"]))
        except (BackboneError, TypeError, ValueError) as exc:
            raise CheckpointError(artifact, f"cannot cut the backbone as the heads' config says: {exc}") from exc
    for key in ("model_type", "hidden_size", "num_hidden_layers"):
        if loaded.config.get(key) != config.get(key):
            found, expected = loaded.config.get(key), config.get(key)
            raise CheckpointError(artifact, f"backbone {key} is {found!r}, the heads' config says {expected!r}")
    heads = load_file(str(artifact / HEADS_FILE))
    root.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(dir=root, prefix=".building-"))
    try:
        write_checkpoint_dir(scratch / "checkpoint", config, loaded.model.state_dict(), heads, loaded.tokenizer)
        try:
            os.replace(scratch / "checkpoint", target)
        except OSError:
            if not (target / CONFIG_NAME).is_file():  # another process may have won the race
                raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    logger.info("materialised the shipped stream heads into %s", target)
    return target
