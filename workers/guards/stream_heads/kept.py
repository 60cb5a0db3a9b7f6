"""A query path taken over unchanged from an existing checkpoint (``--query-from``).

Retraining only the response path (new answer sets, another labelling of answers) should not
move the prompt verdicts, and extracting the prompt features again is most of a CPU training run
(about 6.5M prompt tokens for the public corpus). ``--query-from DIR`` therefore copies the
query path's four tensors (names starting with ``query_``) from ``DIR`` (a shipped artifact or a
full checkpoint written by this command) and trains the response path alone.

The source must have been trained on the same backbone (same file digest, same number of
layers) with the same inner size, since the query heads read that backbone's hidden states; its
recorded prompt data, prompt validation metrics and query-path choice are carried into the new
metadata, with the source's name, command and a digest of the copied tensors.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from workers.backends.stream_artifact import HEADS_FILE
from workers.engine.checkpoint import CONFIG_NAME, METADATA_KEY, WEIGHTS_NAME

QUERY_PREFIX = "query_"
PROMPT_SUMMARY_KEYS = ("prompt_datasets", "prompt_corpus_fingerprint", "prompts_dropped", "prompts")
"""Entries of the source's training metadata that describe its prompt data."""


class QuerySourceError(ValueError):
    """The ``--query-from`` directory cannot lend its query path to this training run."""


@dataclass(frozen=True)
class KeptQueryPath:
    """The query tensors of a source checkpoint and what its metadata says about them."""

    source: Path
    tensors: Mapping[str, torch.Tensor]
    training: Mapping[str, Any]
    """The source's ``streamwarden.training`` metadata."""
    name: str

    def digest(self) -> str:
        """SHA-256 over the copied tensors (names and float32 bytes, in name order)."""
        sha = hashlib.sha256()
        for name in sorted(self.tensors):
            sha.update(name.encode())
            sha.update(self.tensors[name].detach().to(torch.float32).contiguous().numpy().tobytes())
        return sha.hexdigest()

    def record(self) -> dict[str, Any]:
        """What the new metadata says about where its query path came from."""
        return {
            "from": self.name,
            "command": self.training.get("command"),
            "tensors_sha256": self.digest(),
        }


def load_query_path(source: Path, *, backbone: Mapping[str, Any], inner_size: int) -> KeptQueryPath:
    """The query path of ``source``, checked against the run's ``backbone`` entry and inner size.

    Raises:
        QuerySourceError: ``source`` is unreadable, records no training, was trained on another
            backbone or with another inner size, or lacks query tensors.
    """
    from safetensors.torch import load_file

    try:
        config = json.loads((source / CONFIG_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise QuerySourceError(f"{source}: unreadable {CONFIG_NAME}: {exc}") from exc
    metadata = config.get(METADATA_KEY) if isinstance(config, dict) else None
    if not isinstance(metadata, dict) or not isinstance(metadata.get("training"), dict):
        raise QuerySourceError(f"{source}: {CONFIG_NAME} records no stream-heads training")
    theirs = metadata.get("backbone") or {}
    for key in ("sha256", "layers"):
        if theirs.get(key) != backbone.get(key):
            raise QuerySourceError(
                f"{source}: trained on another backbone ({key} {theirs.get(key)!r}, this run {backbone.get(key)!r})"
            )
    if config.get("guard_inner_size") != inner_size:
        raise QuerySourceError(f"{source}: inner size {config.get('guard_inner_size')}, this run {inner_size}")
    weights = source / HEADS_FILE if (source / HEADS_FILE).is_file() else source / WEIGHTS_NAME
    try:
        state = load_file(str(weights))
    except OSError as exc:
        raise QuerySourceError(f"{source}: unreadable weights {weights.name}: {exc}") from exc
    tensors = {name: tensor for name, tensor in state.items() if name.startswith(QUERY_PREFIX)}
    if not tensors:
        raise QuerySourceError(f"{source}: {weights.name} holds no query-path tensors")
    return KeptQueryPath(source, tensors, metadata["training"], str(metadata.get("name", source.name)))
