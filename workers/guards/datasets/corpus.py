"""The training corpus (deduped against every evaluation split) and the evaluation sets."""

from __future__ import annotations

import hashlib
import logging
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from workers.guards.datasets.records import Purpose, Record, text_key
from workers.guards.datasets.registry import DATASETS, EVALUATION_SETS, TRAINING_SETS, load

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class TrainingCorpus:
    """Training records plus what was removed to build them."""

    records: tuple[Record, ...]
    dropped_eval_overlap: int
    """Records whose normalised text also occurs in an evaluation split."""
    dropped_duplicates: int
    """Repeats of a text already in the corpus with the same label."""
    dropped_conflicts: int
    """Records of texts that occur with different labels (all copies are dropped)."""


def evaluation_keys(root: Path) -> frozenset[str]:
    """Normalised texts of every evaluation-only split of every dataset."""
    keys: set[str] = set()
    for name in EVALUATION_SETS:
        for record in load(name, Purpose.EVAL, root):
            keys.add(text_key(record.text))
            if record.prompt is not None:
                keys.add(text_key(record.prompt))
    return frozenset(keys)


def training_corpus(root: Path, names: Sequence[str] = TRAINING_SETS) -> TrainingCorpus:
    """Read the training splits of ``names``; drop evaluation overlaps, repeats and label conflicts.

    The order of ``names`` (then each file's order) decides which copy of a repeated text is kept,
    so the corpus is deterministic.
    """
    held_out = evaluation_keys(root)
    candidates: list[Record] = []
    overlap = 0
    for name in names:
        for record in load(name, Purpose.TRAIN, root):
            if text_key(record.text) in held_out:
                overlap += 1
            else:
                candidates.append(record)
    labels: dict[str, set[str]] = {}
    for record in candidates:
        labels.setdefault(text_key(record.text), set()).add(record.label.value)
    kept: list[Record] = []
    seen: set[str] = set()
    duplicates = conflicts = 0
    for record in candidates:
        key = text_key(record.text)
        if not key or len(labels[key]) > 1:
            conflicts += 1
        elif key in seen:
            duplicates += 1
        else:
            seen.add(key)
            kept.append(record)
    logger.info(
        "training corpus: %s records (dropped %s overlapping evaluation sets, %s repeats, %s conflicting)",
        len(kept),
        overlap,
        duplicates,
        conflicts,
    )
    return TrainingCorpus(tuple(kept), overlap, duplicates, conflicts)


def evaluation_sets(root: Path, names: Sequence[str] = EVALUATION_SETS) -> dict[str, list[Record]]:
    """The evaluation-only records of each named dataset (its evaluation splits only)."""
    unknown = [name for name in names if name not in DATASETS]
    if unknown:
        raise KeyError(f"unknown datasets {unknown}; evaluation sets: {', '.join(EVALUATION_SETS)}")
    return {name: load(name, Purpose.EVAL, root) for name in names}


def fingerprint(records: Iterable[Record]) -> str:
    """SHA-256 over every record's id, label, category and text: names one exact corpus."""
    digest = hashlib.sha256()
    for record in records:
        for part in (record.uid, record.label.value, record.category or "", record.text):
            digest.update(part.encode("utf-8"))
            digest.update(b"\0")
    return digest.hexdigest()


def describe(records: Iterable[Record]) -> dict[str, dict[str, int]]:
    """Counts per dataset and label, for the model card."""
    counts: Counter[tuple[str, str]] = Counter((r.dataset, r.label.value) for r in records)
    summary: dict[str, dict[str, int]] = {}
    for (dataset, label), count in sorted(counts.items()):
        summary.setdefault(dataset, {})[label] = count
    return summary
