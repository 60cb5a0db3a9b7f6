"""Metrics of trained heads on the validation part carved from the training data.

The query path is scored like the evaluation harness scores prompts (argmax, per policy, per
language). The response path is scored like a stream: the debounce runs over each example's
per-token probabilities exactly as a worker runs it (``decide_chunk``; chunking does not change
where it fires), giving response-level precision/recall/F1/FPR and, for harmful examples, where
the cut-off fell relative to the first harmful token. Nothing here is used to pick a threshold.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from workers.backends.base import RISK_ORDER
from workers.engine.debounce import DebounceCarry, decide_chunk
from workers.engine.debounce import Policy as DebouncePolicy
from workers.engine.scores import Head
from workers.guards.metrics import (
    POLICIES,
    StreamOutcome,
    confusion,
    grouped,
    is_flagged,
    predicted_risk,
    summarise_streams,
)
from workers.guards.stream_heads.data import PromptItem, ResponseItem
from workers.guards.stream_heads.heads import StreamHeads, predict, predict_categories
from workers.guards.stream_heads.labels import RISK_LEVELS

_CANONICAL = [RISK_LEVELS.index(risk.value.capitalize()) for risk in RISK_ORDER]
"""Released-order column of each ``RISK_ORDER`` entry."""


def canonical(probs: torch.Tensor) -> np.ndarray[Any, np.dtype[np.float32]]:
    """Released-order probabilities as ``RISK_ORDER`` columns (what backends return)."""
    return probs[:, _CANONICAL].numpy().astype(np.float32)


def query_report(heads: StreamHeads, items: Sequence[PromptItem], features: torch.Tensor) -> dict[str, Any]:
    """Per policy: overall and per-language confusion of the argmax prompt verdicts."""
    probs = canonical(predict(heads, Head.QUERY, features))
    predicted = [predicted_risk(row) for row in probs]
    report: dict[str, Any] = {"n": len(items)}
    for policy in POLICIES:
        gold = [is_flagged(item.record.label, policy) for item in items]
        flagged = [is_flagged(risk, policy) for risk in predicted]
        report[policy] = confusion(gold, flagged).as_dict()
        languages = grouped([item.record.language for item in items], gold, flagged)
        report[f"{policy}_by_language"] = {language: c.as_dict() for language, c in languages.items()}
    return report


def stream_outcome(item: ResponseItem, probs: np.ndarray[Any, np.dtype[np.float32]], categories: Any) -> StreamOutcome:
    """Run the debounce over one example's scored positions (one chunk: chunking changes nothing)."""
    carry, _ = decide_chunk(DebounceCarry(), probs, categories, start=0, policy=DebouncePolicy.STRICT)
    return StreamOutcome(harmful_from=item.tokens.harmful_from, sentence_end=item.tokens.sentence_end, carry=carry)


def response_report(heads: StreamHeads, items: Sequence[ResponseItem], features: torch.Tensor) -> dict[str, Any]:
    """Per policy and kind of example: response-level confusion and cut-off timing."""
    probs = canonical(predict(heads, Head.RESPONSE, features))
    categories = predict_categories(heads, Head.RESPONSE, features).numpy()
    outcomes: dict[str, list[StreamOutcome]] = {}
    start = 0
    for item in items:
        stop = start + item.tokens.scored
        outcome = stream_outcome(item, probs[start:stop], categories[start:stop])
        outcomes.setdefault(item.tokens.example.kind, []).append(outcome)
        outcomes.setdefault("all", []).append(outcome)
        start = stop
    return {
        "n": len(items),
        "positions": int(start),
        **{policy: {kind: summarise_streams(group, policy) for kind, group in outcomes.items()} for policy in POLICIES},
    }
