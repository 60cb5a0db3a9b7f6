"""Head outputs as plain numpy arrays, in the canonical risk order.

This module imports no torch, so the scheduler, the backends and the test fakes can use it.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from topics.events import Risk
from workers.backends.base import RISK_ORDER


class Head(enum.Enum):
    """Which head path scores a position."""

    QUERY = "query"
    """Prompt verdicts: the query heads at the user's end-of-turn token."""
    RESPONSE = "response"
    """Response verdicts: the response heads at every response position."""


@dataclass(frozen=True, slots=True)
class HeadScores:
    """One head path's output at ``n`` positions.

    ``risk`` and ``risk_logits`` columns follow ``RISK_ORDER`` whatever the checkpoint's order;
    ``category`` is the argmax of the category head and ``category_prob`` its softmax probability.
    """

    risk: npt.NDArray[np.float32]  # [n, 3] probabilities
    risk_logits: npt.NDArray[np.float32]  # [n, 3]
    category: npt.NDArray[np.int64]  # [n]
    category_prob: npt.NDArray[np.float32]  # [n]
    category_logits: npt.NDArray[np.float32]  # [n, num_categories]

    def __len__(self) -> int:
        return int(self.risk.shape[0])

    @property
    def labels(self) -> list[Risk]:
        """The argmax risk at each position."""
        return [RISK_ORDER[int(index)] for index in self.risk.argmax(axis=1)]

    @classmethod
    def concat(cls, parts: list[HeadScores]) -> HeadScores:
        """Join scores of consecutive position ranges into one."""
        if len(parts) == 1:
            return parts[0]
        return cls(
            risk=np.concatenate([p.risk for p in parts]),
            risk_logits=np.concatenate([p.risk_logits for p in parts]),
            category=np.concatenate([p.category for p in parts]),
            category_prob=np.concatenate([p.category_prob for p in parts]),
            category_logits=np.concatenate([p.category_logits for p in parts]),
        )

    @classmethod
    def empty(cls, num_categories: int) -> HeadScores:
        """Scores of zero positions."""
        return cls(
            risk=np.zeros((0, 3), np.float32),
            risk_logits=np.zeros((0, 3), np.float32),
            category=np.zeros((0,), np.int64),
            category_prob=np.zeros((0,), np.float32),
            category_logits=np.zeros((0, num_categories), np.float32),
        )

    def slice(self, start: int, stop: int | None) -> HeadScores:
        """Scores of positions ``start .. stop`` (``None``: to the end)."""
        return HeadScores(
            risk=self.risk[start:stop],
            risk_logits=self.risk_logits[start:stop],
            category=self.category[start:stop],
            category_prob=self.category_prob[start:stop],
            category_logits=self.category_logits[start:stop],
        )
