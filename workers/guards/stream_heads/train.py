"""``streamwarden train stream-heads``: the recipe that produces streamwarden's stream heads.

1. The backbone (``backbone``): SmolLM2-135M-Instruct from its GGUF by default, frozen, kept in
   float32 on the CPU for writing; a copy on ``--device`` in ``--dtype`` extracts features.
2. The training data (``data``): training splits only, deduped against every evaluation split;
   optionally a seeded subset; a validation part carved by group.
3. Last hidden states at the positions the heads read (``features``), extracted once.
4. The eight head modules trained on them (``heads``), seeded, each path with the Safe-class
   weight that does best on the carved-off validation part (``fitting``).
5. Validation metrics (``validation``) on that part.
6. A complete checkpoint in ``--out`` (``artifact``), and with ``--ship DIR`` the small artifact
   that ships in the package, both recording the command, data, seed, backbone digest and
   validation metrics under ``config.json``'s ``streamwarden`` key.

Same data, backbone, seed and device give identical head tensors.
"""

from __future__ import annotations

import importlib.metadata
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from workers.backends.backbone import (
    SMOLLM2,
    Backbone,
    BackboneSource,
    load_backbone,
    resolve_source,
    truncate_backbone,
)
from workers.backends.stream_artifact import write_artifact, write_checkpoint_dir
from workers.engine.checkpoint import METADATA_KEY
from workers.guards.datasets.registry import (
    ALL_TRAINING_SETS,
    TRAINING_SETS,
    DatasetMissing,
    dataset_root,
    sets_option,
)
from workers.guards.stream_heads.data import TrainingData, build_training_data
from workers.guards.stream_heads.features import extract_features
from workers.guards.stream_heads.fitting import FitResult, FitSettings, fit_heads
from workers.guards.stream_heads.kept import PROMPT_SUMMARY_KEYS, KeptQueryPath, load_query_path
from workers.guards.stream_heads.labels import guard_keys
from workers.guards.stream_heads.responses import RESPONSE_TRAINING_SETS

if TYPE_CHECKING:
    from transformers import PreTrainedModel

logger = logging.getLogger(__name__)

DEFAULT_INNER_SIZE = 256
DEFAULT_SAFE_WEIGHTS: tuple[float, ...] = (1.0, 3.0, 10.0, 30.0)
LABELLING_SCHEME = "latched-v1"
"""Names the per-token labelling of ``tokens``/``streams`` (see docs/stream_heads.md)."""


@dataclass(frozen=True, slots=True)
class TrainConfig:
    """Everything that determines the trained heads (recorded in the checkpoint's metadata)."""

    out: Path
    backbone: str = SMOLLM2
    gguf: Path | None = None
    data_root: Path | None = None
    prompts: Path | None = None
    """A user's prompt file (``user_data``) instead of the public training prompts."""
    responses: Path | None = None
    """A user's response file (``user_data``) instead of the public training responses."""
    sets: tuple[str, ...] = ALL_TRAINING_SETS
    """The public training sets read: the prompts of those that have prompts (unless ``prompts`` is
    given) and the answers of those that have answers (unless ``responses`` is given)."""
    ship: Path | None = None
    layers: int | None = None
    """Keep only the backbone's first ``layers`` decoder layers (``truncate_backbone``); all by default."""
    device: str = "auto"
    dtype: str = "auto"
    seed: int = 0
    subset: int | None = None
    answers_per_set: int | None = None
    """At most this many harmful and this many safe answers of each response set (seeded); all when None."""
    max_tokens: int = 1024
    epochs: int = 8
    inner_size: int = DEFAULT_INNER_SIZE
    val_fraction: float = 0.15
    learning_rate: float = 1e-3
    weight_decay: float = 1e-2
    category_weight: float = 1.0
    query_batch_size: int = 512
    response_batch_size: int = 4096
    safe_weights: tuple[float, ...] = DEFAULT_SAFE_WEIGHTS
    """Candidate loss weights of Safe targets; each path keeps the best on validation (``fitting``)."""
    query_from: Path | None = None
    """Copy the query path from this checkpoint or artifact and train the response path only (``kept``)."""
    max_batch_tokens: int | None = None
    """Padded tokens per feature-extraction batch; default 65536 on CUDA, 4096 on the CPU."""
    name: str | None = None
    allow_test_checkpoint: bool = False
    """Accept a random-weight test checkpoint as the backbone (tests only; the output is marked)."""
    progress: bool = True

    def command(self) -> str:
        """The CLI invocation reproducing this configuration (file locations omitted: they are
        machine-specific; the backbone and data are pinned by their digests in the metadata)."""
        parts = ["streamwarden", "train", "stream-heads", "--out", str(self.out)]
        if self.backbone != SMOLLM2:
            parts += ["--backbone", self.backbone]
        if self.layers is not None:
            parts += ["--layers", str(self.layers)]
        parts += ["--device", self.device] + (["--dtype", self.dtype] if self.dtype != "auto" else [])
        parts += ["--seed", str(self.seed), "--max-tokens", str(self.max_tokens), "--epochs", str(self.epochs)]
        if self.subset is not None:
            parts += ["--subset", str(self.subset)]
        if self.answers_per_set is not None:
            parts += ["--answers-per-set", str(self.answers_per_set)]
        for option, path in (("--prompts", self.prompts), ("--responses", self.responses)):
            if path is not None:
                parts += [option, str(path)]
        if self.inner_size != DEFAULT_INNER_SIZE:
            parts += ["--inner-size", str(self.inner_size)]
        if self.safe_weights != DEFAULT_SAFE_WEIGHTS:
            parts += ["--safe-weights", *(f"{w:g}" for w in self.safe_weights)]
        if self.query_from is not None:
            parts += ["--query-from", str(self.query_from)]
        if self.prompts is None or self.responses is None:
            parts += sets_option(self.sets)
        if self.ship is not None:
            parts += ["--ship", str(self.ship)]
        return " ".join(parts)

    def model_name(self, source: BackboneSource) -> str:
        if self.name:
            return self.name
        stem = "smollm2-135m" if source.name == SMOLLM2 else source.path.stem
        return f"{stem}-{self.layers}l-stream-heads" if self.layers is not None else f"{stem}-stream-heads"


@dataclass
class _Clock:
    """Seconds spent per phase, for the metadata and the log."""

    phases: dict[str, float] = field(default_factory=dict)
    _start: float = field(default_factory=time.perf_counter)

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.phases[name] = round(now - self._start, 2)
        self._start = now


def _versions() -> dict[str, str]:
    return {name: importlib.metadata.version(name) for name in ("torch", "transformers", "tokenizers", "numpy")}


def extraction_copy(backbone: Backbone, device: torch.device, dtype: torch.dtype) -> PreTrainedModel:
    """The backbone on ``device`` in ``dtype`` for feature extraction; the float32 CPU original is
    kept untouched because it is what the checkpoint stores."""
    from transformers import AutoModel

    if device.type == "cpu" and dtype == torch.float32:
        return backbone.model
    with torch.device(device):
        copy: PreTrainedModel = AutoModel.from_config(  # type: ignore[no-untyped-call]
            backbone.model.config, dtype=dtype
        )
    copy.load_state_dict(backbone.model.state_dict())
    copy.train(False).requires_grad_(False)
    return copy


def _features(
    model: PreTrainedModel, data: TrainingData, *, max_batch_tokens: int, progress: bool, hidden_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    prompt_positions = [np.array([len(p.ids) - 1], dtype=np.int64) for p in data.prompts]
    query = (
        extract_features(
            model,
            [p.ids for p in data.prompts],
            prompt_positions,
            max_batch_tokens=max_batch_tokens,
            description="prompt states",
            progress=progress,
        )
        if data.prompts
        else torch.empty(0, hidden_size, dtype=torch.float16)  # the query path is kept, not trained
    )
    response_positions = [np.arange(r.first_scored, len(r.ids), dtype=np.int64) for r in data.responses]
    response = extract_features(
        model,
        [r.ids for r in data.responses],
        response_positions,
        max_batch_tokens=max_batch_tokens,
        description="response states",
        progress=progress,
    )
    return query, response


def _guard_config(config: TrainConfig, backbone: Backbone, metadata: dict[str, Any]) -> dict[str, Any]:
    name = config.model_name(backbone.source)
    guard = dict(backbone.config)
    guard.update(
        {
            "architectures": [backbone.architecture],
            "torch_dtype": "float32",
            "_name_or_path": f"streamwarden/{name}",
            **guard_keys(config.inner_size),
            METADATA_KEY: metadata,
        }
    )
    return guard


def train(config: TrainConfig) -> dict[str, Any]:
    """Run the recipe (module docstring); returns the ``streamwarden`` metadata written."""
    from workers.engine.runner import resolve_device, resolve_dtype
    from workers.engine.template import ChatFormat

    if config.query_from is not None and config.prompts is not None:
        raise ValueError("--query-from keeps the query path; it cannot also be trained on --prompts")
    clock = _Clock()
    device = resolve_device(config.device)
    dtype = resolve_dtype(config.dtype, device)
    source = resolve_source(config.backbone, config.gguf)
    backbone = load_backbone(
        source, device=torch.device("cpu"), dtype=torch.float32, allow_test_checkpoint=config.allow_test_checkpoint
    )
    if config.layers is not None:
        backbone = truncate_backbone(backbone, config.layers)
    chat = ChatFormat.from_tokenizer(backbone.tokenizer)
    kept = None
    if config.query_from is not None:
        record = _backbone_record(config, source)
        kept = load_query_path(config.query_from, backbone=record, inner_size=config.inner_size)
    clock.lap("load_backbone")

    data = build_training_data(
        chat,
        _data_root(config),
        prompt_file=config.prompts,
        response_file=config.responses,
        prompt_sets=() if kept is not None else tuple(name for name in config.sets if name in TRAINING_SETS),
        response_sets=tuple(name for name in config.sets if name in RESPONSE_TRAINING_SETS),
        seed=config.seed,
        subset=config.subset,
        answers_per_set=config.answers_per_set,
        max_tokens=config.max_tokens,
        val_fraction=config.val_fraction,
    )
    logger.info("training data: %s prompts, %s streamed responses", len(data.prompts), len(data.responses))
    clock.lap("prepare_data")

    budget = config.max_batch_tokens or (65536 if device.type == "cuda" else 4096)
    model = extraction_copy(backbone, device, dtype)
    features = _features(
        model, data, max_batch_tokens=budget, progress=config.progress, hidden_size=backbone.hidden_size
    )
    if model is not backbone.model:
        del model
        if device.type == "cuda":
            torch.cuda.empty_cache()
    clock.lap("extract_features")

    settings = FitSettings(
        hidden_size=backbone.hidden_size,
        inner_size=config.inner_size,
        eps=float(backbone.config.get("rms_norm_eps", 1e-6)),
        seed=config.seed,
        epochs=config.epochs,
        learning_rate=config.learning_rate,
        weight_decay=config.weight_decay,
        category_weight=config.category_weight,
        query_batch_size=config.query_batch_size,
        response_batch_size=config.response_batch_size,
        safe_weights=config.safe_weights,
        progress=config.progress,
    )
    fitted = fit_heads(settings, data, features, device, query=None if kept is None else kept.tensors)
    clock.lap("train_and_validate")

    metadata = _metadata(config, source, data, str(device), dtype, fitted, clock)
    if kept is not None:
        _carry_query_record(metadata["training"], kept)
    if backbone.test_checkpoint:
        metadata["test_checkpoint"] = True  # random backbone weights stay marked as such
    guard = _guard_config(config, backbone, metadata)
    head_state = {name: tensor.detach().cpu() for name, tensor in fitted.heads.state_dict().items()}
    write_checkpoint_dir(config.out, guard, backbone.model.state_dict(), head_state, backbone.tokenizer)
    if config.ship is not None:
        write_artifact(config.ship, guard, head_state)
    clock.lap("write")
    logger.info("stream heads written to %s (%s)", config.out, ", ".join(f"{k} {v}s" for k, v in clock.phases.items()))
    return metadata


_NOT_HYPERPARAMETERS = ("out", "gguf", "data_root", "prompts", "responses", "ship", "progress", "query_from")


def _backbone_record(config: TrainConfig, source: BackboneSource) -> dict[str, Any]:
    """The metadata's ``backbone`` entry: the source's digest and, when truncated, the layers kept."""
    return source.to_metadata() | ({"layers": config.layers} if config.layers is not None else {})


def _carry_query_record(training: dict[str, Any], kept: KeptQueryPath) -> None:
    """Record the kept query path as the source recorded it: its prompt data, validation and choice."""
    theirs = kept.training
    training["query_path"] = kept.record()
    for key in PROMPT_SUMMARY_KEYS:
        if key in theirs:
            training[key] = theirs[key]
    for key, path_key in (("validation", "prompts"), ("selection", "query"), ("losses", "query")):
        if path_key in theirs.get(key, {}):
            training[key] = {path_key: theirs[key][path_key], **training[key]}
    for key in ("tokens", "split"):
        if "prompts" in theirs.get(key, {}):
            training[key]["prompts"] = theirs[key]["prompts"]


def _data_root(config: TrainConfig) -> Path | None:
    """The datasets folder; None only when both paths train on user files and there is none."""
    try:
        return dataset_root(config.data_root)
    except DatasetMissing:
        if config.prompts is not None and config.responses is not None and config.data_root is None:
            return None
        raise


def _metadata(
    config: TrainConfig,
    source: BackboneSource,
    data: TrainingData,
    device: str,
    dtype: torch.dtype,
    fitted: FitResult,
    clock: _Clock,
) -> dict[str, Any]:
    """The ``streamwarden`` entry of ``config.json``: provenance, data, settings and metrics."""
    return {
        "name": config.model_name(source),
        "backbone": _backbone_record(config, source),
        "training": {
            "command": config.command(),
            "seed": config.seed,
            "labelling": LABELLING_SCHEME,
            **data.summary,
            "hyperparameters": {k: v for k, v in asdict(config).items() if k not in _NOT_HYPERPARAMETERS},
            "device": device,
            "feature_dtype": str(dtype).removeprefix("torch."),
            "losses": fitted.losses,
            "selection": fitted.selection,
            "validation": fitted.validation,
            "seconds": dict(clock.phases),
            "versions": _versions(),
        },
    }
