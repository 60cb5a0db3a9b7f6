"""The eight head modules (Qwen3Guard-Stream's names and shapes) and how they are trained.

Each path is ``pre`` Linear(hidden -> inner, no bias), RMSNorm(inner) (the engine's own class, so
training and serving compute the same thing), then a risk Linear(inner -> 3) and a category
Linear(inner -> 8 response / 9 query categories), all without bias. The two paths share nothing,
so each is trained on its own:

- query path: one example per prompt (its end-of-turn state); cross-entropy on risk, weighted so
  that every (language, label) group carries the same total weight, plus the conditional category
  loss (only where the risk target is Unsafe or Controversial and the category is known);
- response path: every scored position of every streamed example; per-position risk and
  conditional category cross-entropy, averaged within each example first (the paper's mean over
  the response's tokens), then over examples.

AdamW with a one-cycle schedule, seeded shuffling and seeded initialisation: the same features,
seed and device give the same tensors.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from rich.progress import Progress
from torch import nn

from workers.engine.model import RMSNorm
from workers.engine.scores import Head
from workers.guards.stream_heads.labels import IGNORE, QUERY_CATEGORY_NAMES, RESPONSE_CATEGORY_NAMES, RISK_LEVELS

if TYPE_CHECKING:
    from collections.abc import Iterator

logger = logging.getLogger(__name__)


class StreamHeads(nn.Module):
    """Both head paths, with the checkpoint's tensor names (``state_dict`` is what gets written)."""

    def __init__(self, hidden_size: int, inner_size: int, eps: float) -> None:
        super().__init__()
        self.risk_level_category_pre = nn.Linear(hidden_size, inner_size, bias=False)
        self.risk_level_category_layernorm = RMSNorm(inner_size, eps)
        self.risk_level_head = nn.Linear(inner_size, len(RISK_LEVELS), bias=False)
        self.category_head = nn.Linear(inner_size, len(RESPONSE_CATEGORY_NAMES), bias=False)
        self.query_risk_level_category_pre = nn.Linear(hidden_size, inner_size, bias=False)
        self.query_risk_level_category_layernorm = RMSNorm(inner_size, eps)
        self.query_risk_level_head = nn.Linear(inner_size, len(RISK_LEVELS), bias=False)
        self.query_category_head = nn.Linear(inner_size, len(QUERY_CATEGORY_NAMES), bias=False)

    def path_parameters(self, head: Head) -> Iterator[nn.Parameter]:
        """The parameters of one path (the query path's names start with ``query_``)."""
        query = head is Head.QUERY
        return (p for name, p in self.named_parameters() if name.startswith("query_") == query)

    def forward(self, head: Head, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Risk logits (released order: Safe, Unsafe, Controversial) and category logits."""
        if head is Head.RESPONSE:
            inner = self.risk_level_category_layernorm(self.risk_level_category_pre(hidden))
            return self.risk_level_head(inner), self.category_head(inner)
        inner = self.query_risk_level_category_layernorm(self.query_risk_level_category_pre(hidden))
        return self.query_risk_level_head(inner), self.query_category_head(inner)


@dataclass(frozen=True, slots=True)
class PathData:
    """One path's training set: features and a target and weight per row."""

    features: torch.Tensor  # [n, hidden], float16 on the CPU
    risk: torch.Tensor  # [n] int64, IGNORE for no risk loss
    category: torch.Tensor  # [n] int64, IGNORE for no category loss
    weight: torch.Tensor  # [n] float32, the row's share of the loss

    def __len__(self) -> int:
        return len(self.risk)


@dataclass(frozen=True, slots=True)
class FitConfig:
    """Optimisation settings of one path."""

    epochs: int
    batch_size: int
    learning_rate: float
    weight_decay: float
    category_weight: float


def group_weights(keys: Sequence[object]) -> torch.Tensor:
    """Weights giving every distinct key the same total weight; mean 1."""
    counts: dict[object, int] = {}
    for key in keys:
        counts[key] = counts.get(key, 0) + 1
    raw = torch.tensor([1.0 / counts[key] for key in keys], dtype=torch.float32)
    return raw * (len(keys) / raw.sum())


def example_weights(lengths: Sequence[int]) -> torch.Tensor:
    """Per-position weights ``1 / len(example)`` scaled to mean 1: every example counts once."""
    parts = [torch.full((n,), 1.0 / n, dtype=torch.float32) for n in lengths if n]
    raw = torch.cat(parts) if parts else torch.zeros(0)
    return raw * (len(raw) / raw.sum()) if len(raw) else raw


def _loss(
    risk_logits: torch.Tensor,
    category_logits: torch.Tensor,
    risk: torch.Tensor,
    category: torch.Tensor,
    weight: torch.Tensor,
    category_weight: float,
) -> torch.Tensor:
    risk_loss = nn.functional.cross_entropy(risk_logits, risk.clamp(min=0), reduction="none")
    category_loss = nn.functional.cross_entropy(category_logits, category.clamp(min=0), reduction="none")
    risk_mask = (risk != IGNORE).float() * weight
    category_mask = (category != IGNORE).float() * weight
    total = (risk_loss * risk_mask).sum() + category_weight * (category_loss * category_mask).sum()
    return total / weight.sum().clamp(min=1e-12)


def fit_path(
    heads: StreamHeads,
    head: Head,
    data: PathData,
    config: FitConfig,
    *,
    seed: int,
    device: torch.device,
    progress: bool = True,
) -> list[float]:
    """Train ``head``'s path of ``heads`` (on ``device``) on ``data``; returns the mean loss per epoch."""
    if len(data) == 0:
        raise ValueError(f"no training rows for the {head.value} path")
    generator = torch.Generator().manual_seed(seed)
    parameters = list(heads.path_parameters(head))
    optimizer = torch.optim.AdamW(parameters, lr=config.learning_rate, weight_decay=config.weight_decay)
    steps = config.epochs * -(-len(data) // config.batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=config.learning_rate, total_steps=steps)
    features = data.features.to(device)
    risk, category, weight = (t.to(device) for t in (data.risk, data.category, data.weight))
    heads.train()
    history = []
    with Progress(disable=not progress) as bar:
        task = bar.add_task(f"training the {head.value} heads", total=steps)
        for _ in range(config.epochs):
            order = torch.randperm(len(data), generator=generator).to(device)
            total, count = 0.0, 0
            for batch in torch.split(order, config.batch_size):
                risk_logits, category_logits = heads(head, features[batch].float())
                loss = _loss(
                    risk_logits, category_logits, risk[batch], category[batch], weight[batch], config.category_weight
                )
                optimizer.zero_grad(set_to_none=True)
                loss.backward()  # type: ignore[no-untyped-call]
                optimizer.step()
                schedule.step()
                total += float(loss.detach()) * len(batch)
                count += len(batch)
                bar.advance(task)
            history.append(total / count)
    heads.eval()
    logger.info("%s path: loss per epoch %s", head.value, ", ".join(f"{x:.4f}" for x in history))
    return history


@torch.inference_mode()
def predict(heads: StreamHeads, head: Head, features: torch.Tensor, *, batch_size: int = 8192) -> torch.Tensor:
    """Risk probabilities in the released order (Safe, Unsafe, Controversial), ``[n, 3]`` float32 CPU."""
    device = next(heads.parameters()).device
    parts = [heads(head, chunk.to(device).float())[0].softmax(-1).cpu() for chunk in torch.split(features, batch_size)]
    return torch.cat(parts) if parts else torch.zeros((0, len(RISK_LEVELS)))


@torch.inference_mode()
def predict_categories(heads: StreamHeads, head: Head, features: torch.Tensor) -> torch.Tensor:
    """Argmax category index per row, ``[n]`` int64 on the CPU."""
    device = next(heads.parameters()).device
    parts = [heads(head, chunk.to(device).float())[1].argmax(-1).cpu() for chunk in torch.split(features, 8192)]
    return torch.cat(parts) if parts else torch.zeros(0, dtype=torch.int64)


def initialise(hidden_size: int, inner_size: int, eps: float, *, seed: int) -> StreamHeads:
    """Heads with seeded default initialisation (Linear: Kaiming-uniform; norm scales: 1)."""
    torch.manual_seed(seed)
    return StreamHeads(hidden_size, inner_size, eps)
