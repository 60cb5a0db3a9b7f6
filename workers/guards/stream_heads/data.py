"""The training data of the stream heads: training splits only, deduped, with a validation part.

- Prompts (query heads): ``corpus.training_corpus`` (every training split, deduped against every
  evaluation split), each rendered as a one-turn conversation; the target sits at the user's
  end-of-turn token. Risk targets are the record's label (Controversial included); category
  targets only where the label is not Safe and the category is known.
- Responses (response heads): the training response sets (``responses.RESPONSE_TRAINING_SETS``),
  dropping any answer whose prompt or text also occurs in an evaluation set (prompts or answers),
  and exact repeats; then the streamed examples of ``streams`` with the per-token targets of
  ``tokens``. The category is the prompt's (none for Jailbreak-only prompts).

A user's own policy data (``user_data``: ``--prompts`` / ``--responses`` files) replaces the public
sets of the path it is given for, and is checked against the evaluation sets the same way.

The validation part is carved by a seeded hash of each record's group (the same formula as the
prefilter's, so a prompt and the answers to it land on the same side, and on the same side as in
the prefilter's split for the same seed). Nothing here reads an evaluation split except to drop
overlaps, through ``Purpose.EVAL`` loaders that never feed training.
"""

from __future__ import annotations

import hashlib
import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from workers.guards.datasets.corpus import describe, evaluation_keys, fingerprint, training_corpus
from workers.guards.datasets.records import Purpose, Record, text_key
from workers.guards.datasets.registry import DATASETS, TRAINING_SETS
from workers.guards.stream_heads.answers import ResponseRecord
from workers.guards.stream_heads.labels import SAFE, UNSAFE, category_target, risk_target
from workers.guards.stream_heads.responses import RESPONSE_EVALUATION_SETS, RESPONSE_TRAINING_SETS, load_responses
from workers.guards.stream_heads.streams import StreamedResponse, streamed_examples
from workers.guards.stream_heads.tokens import (
    TokenizedResponse,
    render_user_prompt,
    response_targets,
    tokenize_response,
)
from workers.guards.stream_heads.user_data import read_user_prompts, read_user_responses

if TYPE_CHECKING:
    from workers.engine.template import ChatFormat

logger = logging.getLogger(__name__)

T = TypeVar("T")


def in_validation(group: str, *, seed: int, fraction: float) -> bool:
    """Seeded, order-independent assignment of ``group`` to the validation part."""
    digest = hashlib.blake2b(f"{seed}:{group}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64 < fraction


def seeded_subset(items: Sequence[T], size: int | None, seed: int) -> list[T]:
    """A seeded sample of ``size`` items in their original order (all of them when None)."""
    if size is None or size >= len(items):
        return list(items)
    chosen = np.random.default_rng(seed).choice(len(items), size=size, replace=False)
    return [items[i] for i in sorted(chosen.tolist())]


def capped_per_set(records: Sequence[ResponseRecord], cap: int | None, seed: int) -> list[ResponseRecord]:
    """At most ``cap`` harmful and ``cap`` safe records of each dataset (``seeded_subset`` of
    each), order kept."""
    if cap is None:
        return list(records)
    by_set: dict[tuple[str, bool], list[ResponseRecord]] = {}
    for record in records:
        by_set.setdefault((record.dataset, record.harmful), []).append(record)
    kept = {id(r) for members in by_set.values() for r in seeded_subset(members, cap, seed)}
    return [r for r in records if id(r) in kept]


@dataclass(frozen=True, slots=True)
class ResponseCorpus:
    """Training answers and what was removed to build them."""

    records: tuple[ResponseRecord, ...]
    dropped_eval_overlap: int
    dropped_repeats: int


def held_out_keys(root: Path) -> frozenset[str]:
    """Normalised texts of every evaluation split: prompts, and answers of the response sets."""
    keys = set(evaluation_keys(root))
    for name in RESPONSE_EVALUATION_SETS:
        for record in load_responses(name, Purpose.EVAL, root):
            keys.add(text_key(record.prompt))
            keys.add(text_key(record.response))
    return frozenset(keys)


def training_responses(root: Path, names: Sequence[str] = RESPONSE_TRAINING_SETS) -> ResponseCorpus:
    """The training answers of ``names``, without evaluation overlaps and exact repeats."""
    held_out = held_out_keys(root)
    kept: list[ResponseRecord] = []
    seen: set[tuple[str, str]] = set()
    overlap = repeats = 0
    for name in names:
        for record in load_responses(name, Purpose.TRAIN, root):
            key = (text_key(record.prompt), text_key(record.response))
            if key[0] in held_out or key[1] in held_out:
                overlap += 1
            elif key in seen:
                repeats += 1
            else:
                seen.add(key)
                kept.append(record)
    logger.info(
        "training responses: %s answers (dropped %s overlapping evaluation sets, %s repeats)",
        len(kept),
        overlap,
        repeats,
    )
    return ResponseCorpus(tuple(kept), overlap, repeats)


@dataclass(frozen=True, slots=True)
class PromptItem:
    """One prompt as a query-head example: target at the last id (the user's end-of-turn)."""

    record: Record
    ids: tuple[int, ...]
    risk: int
    category: int
    validation: bool


@dataclass(frozen=True, slots=True)
class ResponseItem:
    """One streamed example as a response-head example: a target per scored position."""

    tokens: TokenizedResponse
    response_prefix: tuple[int, ...]
    risk: tuple[int, ...]
    category: int
    validation: bool

    @property
    def ids(self) -> tuple[int, ...]:
        t = self.tokens
        return (*t.prompt_ids, *self.response_prefix, *t.content_ids, *t.suffix_ids)

    @property
    def first_scored(self) -> int:
        """Position in ``ids`` of the first answer token."""
        return len(self.tokens.prompt_ids) + len(self.response_prefix)


@dataclass(frozen=True)
class TrainingData:
    """Everything the heads are trained and validated on, and the record of where it came from."""

    prompts: list[PromptItem]
    responses: list[ResponseItem]
    summary: dict[str, Any] = field(default_factory=dict)


def prompt_items(
    chat: ChatFormat, records: Sequence[Record], *, max_tokens: int, seed: int, val_fraction: float
) -> list[PromptItem]:
    """Render every prompt record (clipped to ``max_tokens``) with its targets."""
    items = []
    for record in records:
        risk = risk_target(record.label)
        items.append(
            PromptItem(
                record=record,
                ids=tuple(render_user_prompt(chat, record.text, max_tokens)),
                risk=risk,
                category=category_target(record.category, risk, response=False),
                validation=in_validation(record.split_group, seed=seed, fraction=val_fraction),
            )
        )
    return items


def response_items(
    chat: ChatFormat, examples: Sequence[StreamedResponse], *, max_tokens: int, seed: int, val_fraction: float
) -> list[ResponseItem]:
    """Tokenise every example (prompt up to half of ``max_tokens``) with per-token targets."""
    prompt_budget = max_tokens // 2
    items = []
    for example in examples:
        prompt_ids = render_user_prompt(chat, example.prompt, prompt_budget)
        budget = max(1, max_tokens - len(prompt_ids) - len(chat.response_prefix) - len(chat.response_suffix))
        tokens = tokenize_response(chat, example, prompt_ids=prompt_ids, max_response_tokens=budget)
        risk = response_targets(tokens)
        harmful = tokens.harmful_from is not None
        items.append(
            ResponseItem(
                tokens=tokens,
                response_prefix=tuple(chat.response_prefix),
                risk=tuple(risk),
                category=category_target(example.category, UNSAFE if harmful else SAFE, response=True),
                validation=in_validation(example.group, seed=seed, fraction=val_fraction),
            )
        )
    return items


def _describe_responses(records: Sequence[ResponseRecord]) -> dict[str, dict[str, int]]:
    counts = Counter((r.dataset, "harmful" if r.harmful else "safe") for r in records)
    summary: dict[str, dict[str, int]] = {}
    for (dataset, label), count in sorted(counts.items()):
        summary.setdefault(dataset, {})[label] = count
    return summary


def _responses_fingerprint(records: Sequence[ResponseRecord]) -> str:
    digest = hashlib.sha256()
    for record in records:
        for part in (record.uid, str(record.harmful), record.prompt, record.response):
            digest.update(part.encode("utf-8") + b"\0")
    return digest.hexdigest()


def _file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _prompt_source(
    root: Path | None, prompt_file: Path | None, names: Sequence[str]
) -> tuple[list[Record], dict[str, Any]]:
    """The prompt records to train on (the public training corpus, or a user file) and their record."""
    if prompt_file is None:
        if root is None:
            raise ValueError("the public training sets need the datasets folder")
        corpus = training_corpus(root, names)
        return list(corpus.records), {
            "prompt_datasets": {name: list(DATASETS[name].splits_for(Purpose.TRAIN)) for name in names},
            "prompt_corpus_fingerprint": fingerprint(corpus.records),
            "prompts_dropped": {
                "overlapping_evaluation_sets": corpus.dropped_eval_overlap,
                "repeats": corpus.dropped_duplicates,
                "label_conflicts": corpus.dropped_conflicts,
            },
        }
    records = read_user_prompts(prompt_file)
    held_out = evaluation_keys(root) if root is not None else frozenset()
    kept = [r for r in records if text_key(r.text) not in held_out]
    return kept, {
        "prompt_datasets": {f"user:{prompt_file.name}": {"sha256": _file_digest(prompt_file)}},
        "prompt_corpus_fingerprint": fingerprint(kept),
        "prompts_dropped": {"overlapping_evaluation_sets": len(records) - len(kept)},
    }


def _response_source(
    root: Path | None, response_file: Path | None, names: Sequence[str]
) -> tuple[list[ResponseRecord], dict[str, Any]]:
    """The answers to train on (the public training response sets, or a user file) and their record."""
    if response_file is None:
        if root is None:
            raise ValueError("the public training sets need the datasets folder")
        answers = training_responses(root, names)
        return list(answers.records), {
            "response_datasets": {name: list(DATASETS[name].splits_for(Purpose.TRAIN)) for name in names},
            "response_corpus_fingerprint": _responses_fingerprint(answers.records),
            "responses_dropped": {
                "overlapping_evaluation_sets": answers.dropped_eval_overlap,
                "repeats": answers.dropped_repeats,
            },
        }
    records = read_user_responses(response_file)
    held_out = held_out_keys(root) if root is not None else frozenset()
    kept = [r for r in records if text_key(r.prompt) not in held_out and text_key(r.response) not in held_out]
    return kept, {
        "response_datasets": {f"user:{response_file.name}": {"sha256": _file_digest(response_file)}},
        "response_corpus_fingerprint": _responses_fingerprint(kept),
        "responses_dropped": {"overlapping_evaluation_sets": len(records) - len(kept)},
    }


def build_training_data(
    chat: ChatFormat,
    root: Path | None,
    *,
    seed: int,
    subset: int | None,
    max_tokens: int,
    val_fraction: float,
    answers_per_set: int | None = None,
    prompt_file: Path | None = None,
    response_file: Path | None = None,
    prompt_sets: Sequence[str] = TRAINING_SETS,
    response_sets: Sequence[str] = RESPONSE_TRAINING_SETS,
) -> TrainingData:
    """Read, dedupe, subsample, split and tokenise the training data (module docstring).

    ``prompt_file`` / ``response_file`` replace the public training sets of that path by a user's
    own data (``user_data``). ``root`` is the datasets folder; texts of its evaluation splits are
    dropped from user data too. It may be None only when both files are given, and then nothing
    can be checked against the evaluation sets: the summary says so (``held_out_check``).
    ``answers_per_set`` keeps at most that many harmful and that many safe answers of each
    dataset (a seeded sample, so a large set of one kind, e.g. PHTest's 13,000 safe answers,
    does not dominate the answer tokens); ``subset`` then samples that many prompt records and
    that many answers (seeded) before the streamed examples are built.
    """
    if root is None:
        logger.warning("no datasets folder: user data is not checked against the evaluation sets")
    corpus, prompt_record = _prompt_source(root, prompt_file, prompt_sets)
    answers, response_record = _response_source(root, response_file, response_sets)
    answers = capped_per_set(answers, answers_per_set, seed)
    prompts = seeded_subset(corpus, subset, seed)
    chosen = seeded_subset(answers, subset, seed)
    examples = streamed_examples(chosen, seed=seed)
    data = TrainingData(
        prompts=prompt_items(chat, prompts, max_tokens=max_tokens, seed=seed, val_fraction=val_fraction),
        responses=response_items(chat, examples, max_tokens=max_tokens, seed=seed, val_fraction=val_fraction),
    )
    data.summary.update(
        {
            **prompt_record,
            **response_record,
            "held_out_check": root is not None,
            "prompts": describe(prompts),
            "responses": _describe_responses(chosen),
            "examples": dict(Counter(f"{e.kind}/{'harmful' if e.harmful else 'safe'}" for e in examples)),
            "tokens": {
                "prompts": sum(len(p.ids) for p in data.prompts),
                "responses": sum(len(r.ids) for r in data.responses),
                "scored_response_positions": sum(r.tokens.scored for r in data.responses),
            },
            "split": {
                "prompts": dict(Counter("validation" if p.validation else "train" for p in data.prompts)),
                "responses": dict(Counter("validation" if r.validation else "train" for r in data.responses)),
            },
        }
    )
    return data
