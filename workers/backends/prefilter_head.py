"""The prefilter's trained head: embedding -> risk level (3) and query category (9)."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn


class PrefilterHead(nn.Module):
    """One hidden layer shared by two linear heads.

    ``forward`` returns ``(risk_logits [n, 3] in RISK_ORDER, category_logits [n, categories])``.
    """

    def __init__(self, dim: int, hidden: int, categories: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout))
        self.risk = nn.Linear(hidden, 3)
        self.category = nn.Linear(hidden, categories)

    def forward(self, embeddings: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = self.body(embeddings)
        return self.risk(hidden), self.category(hidden)

    def save(self, path: Path) -> None:
        # Contiguous float32 tensors so the file's bytes depend only on the weights.
        state = {name: tensor.detach().float().contiguous() for name, tensor in self.state_dict().items()}
        save_file(state, str(path))

    @classmethod
    def load(cls, path: Path, *, dim: int, hidden: int, categories: int) -> PrefilterHead:
        """Load weights saved by ``save``; shapes must match the metadata (strict)."""
        head = cls(dim, hidden, categories)
        head.load_state_dict(load_file(str(path)), strict=True)
        head.eval()
        return head
