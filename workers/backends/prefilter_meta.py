"""``meta.json`` of a prefilter head: what it expects, what it decides (``is_decided``), and how it was made.

Serving reads it (``workers.backends.prefilter``); the training toolkit writes it (``workers.guards``)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from topics.events import Risk
from workers.backends.base import RISK_ORDER

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

META_FILE = "meta.json"
HEAD_FILE = "head.safetensors"
ADAPTER_FILE = "adapter.safetensors"

SAFE_COLUMN = RISK_ORDER.index(Risk.SAFE)
UNSAFE_COLUMN = RISK_ORDER.index(Risk.UNSAFE)
FORMAT_VERSION = 1


@dataclass(frozen=True, slots=True)
class Thresholds:
    """When the prefilter decides on its own; everything else escalates (see ``thresholds``)."""

    unsafe: float
    """Block without escalation when P(unsafe) >= this."""
    safe: float
    """Allow without escalation when P(safe) >= this."""
    rule: str
    """How the two numbers were chosen, in words."""


BERT_TARGETS: tuple[str, ...] = (
    "query",
    "key",
    "value",
    "attention.output.dense",
    "intermediate.dense",
    "output.dense",
)
"""Every linear layer of a BERT block (MiniLM's architecture), by module-name suffix."""


@dataclass(frozen=True, slots=True)
class AdapterSpec:
    """Shape of the LoRA adapter a head was fine-tuned with (``adapter``); saved in ``ADAPTER_FILE``."""

    rank: int
    alpha: int
    targets: tuple[str, ...] = BERT_TARGETS

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AdapterSpec:
        return cls(rank=int(data["rank"]), alpha=int(data["alpha"]), targets=tuple(data["targets"]))


def is_decided(risk: npt.NDArray[np.float32], thresholds: Thresholds) -> bool:
    """Whether probabilities ``risk`` (``RISK_ORDER``) are confident enough to skip escalation."""
    return bool(risk[UNSAFE_COLUMN] >= thresholds.unsafe or risk[SAFE_COLUMN] >= thresholds.safe)


@dataclass(frozen=True, slots=True)
class PrefilterMeta:
    """Everything needed to load a head and to know where it came from.

    ``risk_labels`` is the column order of the risk head (``RISK_ORDER``); ``categories`` that of
    the category head. ``probe`` identifies the encoder (``Encoder.probe``). ``training`` records
    the command, seed, datasets, corpus fingerprint, hyperparameters and validation metrics.
    ``adapter`` is set when the encoder was fine-tuned: its LoRA factors are in ``ADAPTER_FILE``
    and must be merged into the encoder before the probe and the head mean anything.
    """

    encoder: str
    encoder_dtype: str
    embedding_dim: int
    hidden: int
    risk_labels: tuple[str, ...]
    categories: tuple[str, ...]
    thresholds: Thresholds
    probe: tuple[float, ...]
    training: dict[str, Any] = field(default_factory=dict)
    adapter: AdapterSpec | None = None
    format_version: int = FORMAT_VERSION

    def write(self, directory: Path) -> Path:
        path = directory / META_FILE
        path.write_text(json.dumps(asdict(self), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        return path

    @classmethod
    def read(cls, directory: Path) -> PrefilterMeta:
        """Read ``directory/meta.json``.

        Raises:
            FileNotFoundError: no meta.json there.
            ValueError: a format this code does not read.
        """
        data = json.loads((directory / META_FILE).read_text(encoding="utf-8"))
        version = data.get("format_version")
        if version != FORMAT_VERSION:
            raise ValueError(f"{directory / META_FILE}: format_version {version} is not {FORMAT_VERSION}")
        return cls(
            encoder=data["encoder"],
            encoder_dtype=data["encoder_dtype"],
            embedding_dim=int(data["embedding_dim"]),
            hidden=int(data["hidden"]),
            risk_labels=tuple(data["risk_labels"]),
            categories=tuple(data["categories"]),
            thresholds=Thresholds(**data["thresholds"]),
            probe=tuple(float(x) for x in data["probe"]),
            training=dict(data["training"]),
            adapter=AdapterSpec.from_dict(data["adapter"]) if data.get("adapter") else None,
        )


def default_model_dir() -> Path:
    """``workers/models/prefilter``: the head that ships with the project."""
    return Path(__file__).resolve().parents[1] / "models" / "prefilter"


def resolve_model_dir(name: str) -> Path:
    """``"default"`` is the shipped head; anything else is a directory holding meta.json."""
    path = default_model_dir() if name == "default" else Path(name)
    if not (path / META_FILE).is_file():
        raise FileNotFoundError(f"no prefilter head at {path} (expected {META_FILE} and {HEAD_FILE})")
    return path
