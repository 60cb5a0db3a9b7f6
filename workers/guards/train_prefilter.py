"""Train the prefilter head: the command that produces ``workers/models/prefilter``.

``streamwarden train prefilter --out DIR [--subset N] [--seed S]`` runs ``train``:

1. the training corpus (training splits only, deduped against every evaluation split);
2. optionally a seeded subset of N records;
3. a validation split of 15% carved from it by a seeded hash of each record's group, so
   translations, paraphrases and attacks on one goal stay on one side;
4. embeddings from the sentence encoder (cached by encoder and corpus fingerprint);
5. the head, trained with a fixed seed on the training part (risk loss balanced per language and
   label, category loss on records with a category); with ``--adapter-rank R`` the encoder is
   fine-tuned too, with LoRA adapters trained together with the head (``finetune``), and the
   validation part is embedded by the adapted encoder;
6. thresholds chosen on the validation part (``thresholds``) and validation metrics;
7. ``head.safetensors`` (+ ``adapter.safetensors`` when fine-tuned) + ``meta.json`` recording the
   command, data, seed and metrics.

Same data, seed, encoder and machine give byte-identical head files (the frozen recipe; the
fine-tuned one is seeded too, but not checked for byte identity).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from rich.progress import track

from topics.events import Risk
from workers.backends.base import RISK_ORDER
from workers.backends.encoder import DEFAULT_ENCODER, Encoder, EncoderDtype
from workers.backends.prefilter_adapter import save as save_adapter
from workers.backends.prefilter_head import PrefilterHead
from workers.backends.prefilter_meta import ADAPTER_FILE, HEAD_FILE, PrefilterMeta, Thresholds, is_decided
from workers.backends.prefilter_model import TextScores, head_probabilities
from workers.backends.taxonomy import QUERY_CATEGORIES
from workers.guards.datasets.corpus import describe, fingerprint, training_corpus
from workers.guards.datasets.records import Purpose, Record
from workers.guards.datasets.registry import DATASETS, TRAINING_SETS, dataset_root, sets_option
from workers.guards.finetune import FineTuneConfig, Targets, fine_tune
from workers.guards.metrics import POLICIES, confusion, grouped, is_flagged, predicted_risk
from workers.guards.thresholds import select_thresholds

if TYPE_CHECKING:
    import numpy.typing as npt

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class TrainConfig:
    """Everything that determines a trained head (all of it is recorded in meta.json)."""

    out: Path
    seed: int = 0
    subset: int | None = None
    encoder: str = DEFAULT_ENCODER
    encoder_dtype: EncoderDtype = "bfloat16"
    datasets: tuple[str, ...] = TRAINING_SETS
    val_fraction: float = 0.15
    epochs: int = 30
    batch_size: int = 512
    learning_rate: float = 2e-3
    weight_decay: float = 1e-2
    hidden: int = 256
    dropout: float = 0.1
    category_weight: float = 0.5
    max_block_fpr: float = 0.01
    max_allow_leak: float = 0.02
    fine_tune: FineTuneConfig | None = None
    """Fine-tune the encoder with LoRA adapters (None: the head alone on frozen embeddings)."""
    data_root: Path | None = None
    cache_dir: Path | None = None
    progress: bool = True

    def command(self) -> str:
        """The CLI invocation that reproduces this configuration."""
        parts = ["streamwarden", "train", "prefilter", "--out", str(self.out), "--seed", str(self.seed)]
        if self.subset is not None:
            parts += ["--subset", str(self.subset)]
        if self.encoder != DEFAULT_ENCODER:
            parts += ["--encoder", self.encoder]
        if self.encoder_dtype != "bfloat16":
            parts += ["--encoder-dtype", self.encoder_dtype]
        if self.fine_tune is not None:
            defaults = FineTuneConfig()
            parts += ["--adapter-rank", str(self.fine_tune.rank)]
            if self.fine_tune.epochs != defaults.epochs:
                parts += ["--adapter-epochs", str(self.fine_tune.epochs)]
            if self.fine_tune.max_tokens != defaults.max_tokens:
                parts += ["--adapter-max-tokens", str(self.fine_tune.max_tokens)]
        return " ".join(parts + sets_option(self.datasets, TRAINING_SETS))


def is_validation(record: Record, *, seed: int, fraction: float) -> bool:
    """Seeded, order-independent assignment of a record's group to the validation part."""
    digest = hashlib.blake2b(f"{seed}:{record.split_group}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64 < fraction


def take_subset(records: Sequence[Record], size: int | None, seed: int) -> list[Record]:
    """A seeded sample of ``size`` records in corpus order (all of them when ``size`` is None)."""
    if size is None or size >= len(records):
        return list(records)
    chosen = np.random.default_rng(seed).choice(len(records), size=size, replace=False)
    return [records[i] for i in sorted(chosen.tolist())]


def embed_cached(
    encoder: Encoder, texts: Sequence[str], cache_dir: Path | None, *, progress: bool = True
) -> npt.NDArray[np.float32]:
    """Embeddings of ``texts``, read from / written to ``cache_dir`` keyed by encoder and texts."""
    digest = hashlib.sha256(f"{encoder.name}\0{encoder.dtype}".encode())
    for text in texts:
        digest.update(text.encode("utf-8") + b"\0")
    path = cache_dir / f"{digest.hexdigest()[:24]}.npy" if cache_dir is not None else None
    if path is not None and path.is_file():
        logger.info("embeddings from cache %s", path)
        cached: npt.NDArray[np.float32] = np.load(path)
        return cached
    batches = range(0, len(texts), 512)
    steps = track(batches, description="embedding") if progress else batches
    parts = [encoder.embed(texts[start : start + 512]) for start in steps]
    embeddings = np.concatenate(parts) if parts else np.zeros((0, encoder.dim), dtype=np.float32)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, embeddings)
    return embeddings


def _risk_targets(records: Sequence[Record]) -> torch.Tensor:
    return torch.tensor([RISK_ORDER.index(r.label) for r in records], dtype=torch.long)


def _category_targets(records: Sequence[Record]) -> torch.Tensor:
    """Category index per record, -100 (ignored) for safe records and records without a category."""
    return torch.tensor(
        [
            QUERY_CATEGORIES.index(r.category) if r.category is not None and r.label is not Risk.SAFE else -100
            for r in records
        ],
        dtype=torch.long,
    )


def _balance_weights(records: Sequence[Record]) -> torch.Tensor:
    """Weights giving every (language, label) group the same total weight, mean 1."""
    counts = Counter((r.language, r.label) for r in records)
    raw = torch.tensor([1.0 / counts[(r.language, r.label)] for r in records], dtype=torch.float32)
    return raw * (len(records) / raw.sum())


def fit_head(config: TrainConfig, embeddings: npt.NDArray[np.float32], records: Sequence[Record]) -> PrefilterHead:
    """Train a head on ``embeddings`` of ``records`` with the config's seed (deterministic on CPU)."""
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    head = PrefilterHead(embeddings.shape[1], config.hidden, len(QUERY_CATEGORIES), config.dropout)
    optimizer = torch.optim.AdamW(head.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    steps_per_epoch = max(1, -(-len(records) // config.batch_size))
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=config.learning_rate, total_steps=config.epochs * steps_per_epoch
    )
    inputs = torch.from_numpy(embeddings)
    risk_y, category_y, weights = (
        _risk_targets(records),
        _category_targets(records),
        _balance_weights(records),
    )
    category_loss = torch.nn.CrossEntropyLoss(ignore_index=-100)
    head.train()
    epochs = range(config.epochs)
    for _ in track(epochs, description="training head") if config.progress else epochs:
        order = torch.randperm(len(records), generator=generator)
        for batch in torch.split(order, config.batch_size):
            risk_logits, category_logits = head(inputs[batch])
            per_record = torch.nn.functional.cross_entropy(risk_logits, risk_y[batch], reduction="none")
            loss = (per_record * weights[batch]).sum() / weights[batch].sum()
            if bool((category_y[batch] != -100).any()):
                loss = loss + config.category_weight * category_loss(category_logits, category_y[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]
            optimizer.step()
            schedule.step()
    head.eval()
    return head


def validation_report(scores: TextScores, records: Sequence[Record], thresholds: Thresholds) -> dict[str, Any]:
    """Metrics on the validation part: per policy at the argmax, and what the thresholds decide."""
    report: dict[str, Any] = {"n": len(records), "labels": dict(Counter(r.label.value for r in records))}
    predicted = [predicted_risk(row) for row in scores.risk]
    for policy in POLICIES:
        gold = [is_flagged(r.label, policy) for r in records]
        flagged = [is_flagged(p, policy) for p in predicted]
        report[policy] = confusion(gold, flagged).as_dict()
        languages = grouped([r.language for r in records], gold, flagged)
        report[f"{policy}_by_language"] = {language: c.as_dict() for language, c in languages.items()}
    decided = [is_decided(row, thresholds) for row in scores.risk]
    blocked = [d and p is Risk.UNSAFE for d, p in zip(decided, predicted, strict=True)]
    allowed = [d and p is Risk.SAFE for d, p in zip(decided, predicted, strict=True)]
    report["decided_share"] = sum(decided) / max(1, len(records))
    report["blocked"] = confusion([r.label is Risk.UNSAFE for r in records], blocked).as_dict()
    report["allowed_non_safe"] = sum(a and r.label is not Risk.SAFE for a, r in zip(allowed, records, strict=True))
    report["allowed"] = sum(allowed)
    return report


def _versions() -> dict[str, str]:
    names = ("torch", "sentence-transformers", "transformers", "numpy")
    return {name: importlib.metadata.version(name) for name in names}


def train(config: TrainConfig) -> PrefilterMeta:
    """Run the whole recipe (module docstring) and write the head into ``config.out``."""
    root = dataset_root(config.data_root)
    corpus = training_corpus(root, config.datasets)
    records = take_subset(corpus.records, config.subset, config.seed)
    val_mask = [is_validation(r, seed=config.seed, fraction=config.val_fraction) for r in records]
    train_records = [r for r, v in zip(records, val_mask, strict=True) if not v]
    val_records = [r for r, v in zip(records, val_mask, strict=True) if v]
    if not train_records or not val_records:
        raise ValueError(f"{len(records)} records are too few to carve a validation split")
    logger.info("training on %s records, validating on %s", len(train_records), len(val_records))

    encoder = Encoder(config.encoder, dtype=config.encoder_dtype)
    factors: dict[str, torch.Tensor] | None = None
    if config.fine_tune is None:
        embeddings = embed_cached(encoder, [r.text for r in records], config.cache_dir, progress=config.progress)
        mask = np.array(val_mask)
        head = fit_head(config, embeddings[~mask], train_records)
        val_embeddings = embeddings[mask]
    else:
        torch.manual_seed(config.seed)
        head, factors = fine_tune(
            encoder,
            [r.text for r in train_records],
            Targets(_risk_targets(train_records), _category_targets(train_records), _balance_weights(train_records)),
            config.fine_tune,
            head=PrefilterHead(encoder.dim, config.hidden, len(QUERY_CATEGORIES), config.dropout),
            category_weight=config.category_weight,
            seed=config.seed,
            progress=config.progress,
        )
        # The adapted encoder's embeddings depend on its weights, so they are never cached.
        val_embeddings = embed_cached(encoder, [r.text for r in val_records], None, progress=config.progress)
    val_scores = head_probabilities(head, val_embeddings)
    thresholds = select_thresholds(
        val_scores.risk,
        [r.label for r in val_records],
        max_block_fpr=config.max_block_fpr,
        max_allow_leak=config.max_allow_leak,
    )
    hyper = {k: v for k, v in asdict(config).items() if k not in ("out", "data_root", "cache_dir", "progress")}
    meta = PrefilterMeta(
        encoder=encoder.name,
        encoder_dtype=encoder.dtype,
        embedding_dim=encoder.dim,
        hidden=config.hidden,
        risk_labels=tuple(r.value for r in RISK_ORDER),
        categories=QUERY_CATEGORIES,
        thresholds=thresholds,
        probe=tuple(encoder.probe()),
        adapter=config.fine_tune.spec if config.fine_tune is not None else None,
        training={
            "command": config.command(),
            "seed": config.seed,
            "datasets": {name: list(DATASETS[name].splits_for(Purpose.TRAIN)) for name in config.datasets},
            "corpus_fingerprint": fingerprint(corpus.records),
            "subset": config.subset,
            "records": {"train": len(train_records), "validation": len(val_records)},
            "per_dataset": describe(records),
            "dropped": {
                "overlapping_evaluation_sets": corpus.dropped_eval_overlap,
                "repeats": corpus.dropped_duplicates,
                "conflicting_labels": corpus.dropped_conflicts,
            },
            "hyperparameters": hyper,
            "validation": validation_report(val_scores, val_records, thresholds),
            "versions": _versions(),
        },
    )
    config.out.mkdir(parents=True, exist_ok=True)
    head.save(config.out / HEAD_FILE)
    if factors is not None:
        save_adapter(factors, config.out / ADAPTER_FILE)
    else:
        (config.out / ADAPTER_FILE).unlink(missing_ok=True)  # a stale one would be merged on load
    meta.write(config.out)
    logger.info(
        "prefilter head written to %s (thresholds unsafe=%.4f safe=%.4f)",
        config.out,
        thresholds.unsafe,
        thresholds.safe,
    )
    return meta
