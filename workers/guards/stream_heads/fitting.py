"""Both head paths trained on extracted features, each with a Safe-class weight chosen on validation.

A streaming guard judges every token of every answer, and the debounce cuts an answer off at the
first two consecutive Unsafe tokens, so a per-token false alarm rate that looks small still cuts
off many safe answers. The balance between catching harmful answers and leaving safe ones alone
is therefore chosen, not assumed: each path is trained once per candidate weight of its Safe
targets (``safe_weights``, multiplying the rows' loss weights) and the candidate with the best
strict F1 on the validation part is kept:

- query path: F1 of the prompt verdicts;
- response path: response-level F1 (an answer is flagged when the debounce cuts it off), among
  the candidates that cut most harmful validation answers (more than half) within 32 tokens of
  their first harmful token, the target of the stream default; if none does, the one that cuts
  the most that early.

Ties go to the earlier candidate. Only the validation part carved from the training data is used,
never an evaluation set. Every candidate's validation numbers are recorded. Without validation
rows there is nothing to choose on: the first candidate is kept, and the record says so.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from workers.engine.scores import Head
from workers.guards.stream_heads.data import PromptItem, ResponseItem, TrainingData
from workers.guards.stream_heads.heads import (
    FitConfig,
    PathData,
    StreamHeads,
    example_weights,
    fit_path,
    group_weights,
    initialise,
)
from workers.guards.stream_heads.labels import IGNORE, SAFE, UNSAFE
from workers.guards.stream_heads.validation import query_report, response_report

logger = logging.getLogger(__name__)

MOST = 0.5
"""Share of harmful validation answers that must be cut within 32 tokens ("most cases")."""


@dataclass(frozen=True, slots=True)
class FitSettings:
    """What the head training needs from the command's configuration."""

    hidden_size: int
    inner_size: int
    eps: float
    seed: int
    epochs: int
    learning_rate: float
    weight_decay: float
    category_weight: float
    query_batch_size: int
    response_batch_size: int
    safe_weights: tuple[float, ...]
    progress: bool = True

    def fit_config(self, head: Head) -> FitConfig:
        batch = self.query_batch_size if head is Head.QUERY else self.response_batch_size
        return FitConfig(self.epochs, batch, self.learning_rate, self.weight_decay, self.category_weight)


@dataclass(frozen=True)
class FitResult:
    """The chosen heads and the record of how they were chosen."""

    heads: StreamHeads
    losses: dict[str, list[float]]
    validation: dict[str, Any]
    selection: dict[str, Any]


def split_rows(validation: Sequence[bool], counts: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Row indices of the training and the validation items, each item spanning ``counts`` rows."""
    mask = torch.tensor(np.repeat(np.array(validation, dtype=bool), np.array(counts, dtype=np.int64)))
    rows = torch.arange(len(mask))
    return rows[~mask], rows[mask]


def query_data(items: Sequence[PromptItem], features: torch.Tensor) -> PathData:
    """One row per prompt; every (language, label) group carries the same total weight."""
    return PathData(
        features=features,
        risk=torch.tensor([p.risk for p in items], dtype=torch.int64),
        category=torch.tensor([p.category for p in items], dtype=torch.int64),
        weight=group_weights([(p.record.language, p.risk) for p in items]),
    )


def response_data(items: Sequence[ResponseItem], features: torch.Tensor) -> PathData:
    """One row per scored position; every example carries the same total weight."""
    risk = torch.tensor([t for item in items for t in item.risk], dtype=torch.int64)
    category = torch.tensor(
        [item.category if t == UNSAFE else IGNORE for item in items for t in item.risk], dtype=torch.int64
    )
    return PathData(features, risk, category, example_weights([item.tokens.scored for item in items]))


def with_safe_weight(data: PathData, weight: float) -> PathData:
    """``data`` with the loss weight of its Safe rows multiplied by ``weight``."""
    scaled = torch.where(data.risk == SAFE, data.weight * weight, data.weight)
    return PathData(data.features, data.risk, data.category, scaled)


def _query_score(report: dict[str, Any]) -> tuple[float, ...]:
    f1 = report["strict"]["f1"]
    return (-1.0 if f1 is None else f1,)


def _response_score(report: dict[str, Any]) -> tuple[float, ...]:
    summary = report["strict"].get("all")
    if summary is None:
        return (-1.0, -1.0)
    within = summary["timing"]["within_32"]
    f1 = summary["responses"]["f1"]
    early = -1.0 if within is None else within
    # Candidates meeting the timing target rank above the rest, by F1; the rest by timing.
    return (1.0, -1.0 if f1 is None else f1) if early > MOST else (0.0, early)


def _fit_path(
    settings: FitSettings,
    head: Head,
    train: PathData,
    validate: Callable[[StreamHeads], dict[str, Any]],
    device: torch.device,
) -> tuple[StreamHeads, list[float], dict[str, Any], dict[str, Any]]:
    """Train ``head``'s path once per candidate weight; keep the best (module docstring)."""
    scorer = _query_score if head is Head.QUERY else _response_score
    candidates: dict[str, Any] = {}
    best: tuple[tuple[float, ...], float, StreamHeads, list[float], dict[str, Any]] | None = None
    for weight in settings.safe_weights:
        heads = initialise(settings.hidden_size, settings.inner_size, settings.eps, seed=settings.seed).to(device)
        losses = fit_path(
            heads,
            head,
            with_safe_weight(train, weight),
            settings.fit_config(head),
            seed=settings.seed,
            device=device,
            progress=settings.progress,
        )
        report = validate(heads)
        score = scorer(report)
        candidates[str(weight)] = {"score": list(score), "strict": _brief(report, head)}
        logger.info("%s path, safe weight %s: validation %s", head.value, weight, candidates[str(weight)]["strict"])
        if best is None or score > best[0]:
            best = (score, weight, heads, losses, report)
    if best is None:
        raise ValueError("no candidate safe weights")
    score, weight, heads, losses, report = best
    chosen = {"safe_weight": weight, "candidates": candidates}
    if len(settings.safe_weights) > 1 and all(c["score"][0] < 0 for c in candidates.values()):
        chosen["note"] = "no validation rows to choose on: the first candidate was kept"
    return heads, losses, report, chosen


def _brief(report: dict[str, Any], head: Head) -> dict[str, Any]:
    if head is Head.QUERY:
        strict = report["strict"]
        return {key: strict[key] for key in ("f1", "precision", "recall", "fpr")}
    summary = report["strict"].get("all")
    if summary is None:
        return {}
    responses, timing = summary["responses"], summary["timing"]
    return {**{k: responses[k] for k in ("f1", "precision", "recall", "fpr")}, "within_32": timing["within_32"]}


def fit_heads(
    settings: FitSettings,
    data: TrainingData,
    features: tuple[torch.Tensor, torch.Tensor],
    device: torch.device,
    *,
    query: Mapping[str, torch.Tensor] | None = None,
) -> FitResult:
    """Train and choose both paths; the returned heads hold each path's chosen weights.

    With ``query`` (the query path's tensors of another checkpoint, ``kept``) only the response
    path is trained; the query tensors are copied unchanged and the result records nothing about
    the query path (the caller carries the source's record over).
    """
    query_features, response_features = features
    response_train, response_val = split_rows(
        [r.validation for r in data.responses], [r.tokens.scored for r in data.responses]
    )
    val_responses = [r for r in data.responses if r.validation]
    response_heads, response_losses, response_val_report, response_choice = _fit_path(
        settings,
        Head.RESPONSE,
        response_data([r for r in data.responses if not r.validation], response_features[response_train]),
        lambda heads: response_report(heads, val_responses, response_features[response_val]),
        device,
    )
    if query is not None:
        _copy_path(response_heads, query, query_path=True)
        return FitResult(
            heads=response_heads,
            losses={"response": response_losses},
            validation={"responses": response_val_report},
            selection={"response": response_choice},
        )
    query_train, query_val = split_rows([p.validation for p in data.prompts], [1] * len(data.prompts))
    val_prompts = [p for p in data.prompts if p.validation]
    query_heads, query_losses, query_val_report, query_choice = _fit_path(
        settings,
        Head.QUERY,
        query_data([p for p in data.prompts if not p.validation], query_features[query_train]),
        lambda heads: query_report(heads, val_prompts, query_features[query_val]),
        device,
    )
    # One set of heads: each path's tensors from the run that was chosen for it.
    _copy_path(query_heads, dict(response_heads.named_parameters()), query_path=False)
    return FitResult(
        heads=query_heads,
        losses={"query": query_losses, "response": response_losses},
        validation={"prompts": query_val_report, "responses": response_val_report},
        selection={"query": query_choice, "response": response_choice},
    )


def _copy_path(heads: StreamHeads, source: Mapping[str, torch.Tensor], *, query_path: bool) -> None:
    """Overwrite one path of ``heads`` (the query path or the response path) with ``source``'s tensors.

    Raises:
        ValueError: ``source`` lacks one of the path's tensors or has it in another shape.
    """
    with torch.no_grad():
        for name, target in heads.named_parameters():
            if name.startswith("query_") != query_path:
                continue
            if name not in source:
                raise ValueError(f"the source heads have no tensor {name}")
            tensor = source[name]
            if tuple(tensor.shape) != tuple(target.shape):
                shapes = f"the source's {tuple(tensor.shape)}, these heads' {tuple(target.shape)}"
                raise ValueError(f"{name}: shape {shapes}")
            target.copy_(tensor.to(target.dtype))
