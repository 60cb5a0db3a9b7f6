"""Fine-tune the prefilter's encoder (LoRA adapters) and its head together.

``streamwarden train prefilter --adapter-rank R`` runs this instead of fitting the head on frozen
embeddings. The adapters start at zero (the encoder computes exactly what the packaged MiniLM
computes), the head starts fresh, and both train on the same losses as the frozen recipe (risk,
balanced per language and label, plus category): one optimiser, two learning rates (the head's
higher, since it starts from nothing), a one-cycle schedule over all steps.

Batches are drawn in a seeded order and each group of ``_POOL`` batches is sorted by text length
before it is cut into batches, so a batch holds texts of similar length and pads little: on a CPU
the cost of a step is the tokens it pushes through the encoder, padding included.

After training the adapters are merged into the encoder's weights (``adapter.merge``); the caller
embeds its validation split with that merged encoder, as serving will.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from rich.progress import track

from workers.backends.encoder import Encoder
from workers.backends.prefilter_adapter import attach, factors, merge
from workers.backends.prefilter_head import PrefilterHead
from workers.backends.prefilter_meta import AdapterSpec

logger = logging.getLogger(__name__)

_POOL = 64
"""Batches sorted together by length: enough to group lengths, few enough to keep the order random."""


@dataclass(frozen=True, slots=True)
class FineTuneConfig:
    """The fine-tuning part of a prefilter recipe (recorded with the rest in meta.json)."""

    rank: int = 16
    alpha: int = 32
    epochs: int = 1
    batch_size: int = 32
    learning_rate: float = 3e-4
    """Adapters."""
    head_learning_rate: float = 2e-3
    max_tokens: int = 128
    """Training reads each text up to this many tokens (serving reads the encoder's full 256)."""
    adapter_dropout: float = 0.05

    @property
    def spec(self) -> AdapterSpec:
        return AdapterSpec(rank=self.rank, alpha=self.alpha)


@dataclass(frozen=True, slots=True)
class Targets:
    """What each training text should produce: risk index, category index (-100: none), loss weight."""

    risk: torch.Tensor
    category: torch.Tensor
    weight: torch.Tensor


def _batches(lengths: Sequence[int], batch_size: int, generator: torch.Generator) -> list[torch.Tensor]:
    """Index batches in a seeded order, lengths grouped within pools of ``_POOL`` batches."""
    order = torch.randperm(len(lengths), generator=generator)
    batches: list[torch.Tensor] = []
    for pool in torch.split(order, batch_size * _POOL):
        ranked = sorted(pool.tolist(), key=lambda i: lengths[i])
        batches += [torch.tensor(ranked[i : i + batch_size]) for i in range(0, len(ranked), batch_size)]
    shuffled = torch.randperm(len(batches), generator=generator).tolist()
    return [batches[i] for i in shuffled]


def fine_tune(
    encoder: Encoder,
    texts: Sequence[str],
    targets: Targets,
    config: FineTuneConfig,
    *,
    head: PrefilterHead,
    category_weight: float,
    seed: int,
    progress: bool = True,
) -> tuple[PrefilterHead, dict[str, torch.Tensor]]:
    """Train adapters on ``encoder`` and ``head`` on ``texts``; merge the adapters into ``encoder``.

    Returns the trained head (eval mode) and the adapter's factors (what ``adapter.save`` writes),
    taken before the merge. ``encoder`` afterwards computes the fine-tuned embeddings.

    Raises:
        ValueError: the encoder does not run in float32 (adapters do not train in bfloat16 on CPU).
    """
    if encoder.dtype != "float32":
        raise ValueError(f"fine-tuning the encoder needs float32, not {encoder.dtype} (--encoder-dtype float32)")
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    adapted = attach(encoder.transformer, config.spec, dropout=config.adapter_dropout)
    adapter_params = [p for p in adapted.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(
        [
            {"params": adapter_params, "lr": config.learning_rate},
            {"params": list(head.parameters()), "lr": config.head_learning_rate},
        ],
        weight_decay=1e-2,
    )
    lengths = [len(text) for text in texts]
    steps_per_epoch = -(-len(texts) // config.batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer,
        max_lr=[config.learning_rate, config.head_learning_rate],
        total_steps=max(1, config.epochs * steps_per_epoch),
    )
    category_loss = torch.nn.CrossEntropyLoss(ignore_index=-100)
    logger.info(
        "fine-tuning %s adapter parameters (rank %s) and the head on %s texts, %s steps",
        sum(p.numel() for p in adapter_params),
        config.rank,
        len(texts),
        config.epochs * steps_per_epoch,
    )
    encoder.set_training(True)
    head.train()
    for epoch in range(config.epochs):
        batches = _batches(lengths, config.batch_size, generator)
        steps = track(batches, description=f"fine-tuning, epoch {epoch + 1}") if progress else batches
        for batch in steps:
            embeddings = encoder.trainable_embeddings([texts[i] for i in batch.tolist()], max_tokens=config.max_tokens)
            risk_logits, category_logits = head(embeddings)
            per_text = torch.nn.functional.cross_entropy(risk_logits, targets.risk[batch], reduction="none")
            weights = targets.weight[batch]
            loss = (per_text * weights).sum() / weights.sum()
            if bool((targets.category[batch] != -100).any()):
                loss = loss + category_weight * category_loss(category_logits, targets.category[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]
            optimizer.step()
            schedule.step()
    encoder.set_training(False)
    head.eval()
    trained = factors(adapted)
    with torch.no_grad():
        merge(adapted)
    return head, trained
