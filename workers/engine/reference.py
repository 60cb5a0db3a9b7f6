"""The reference semantics of Qwen3Guard-Stream, computed the straightforward (slow) way.

One conversation at a time, no cache, no batching: the prompt verdict is the query heads at the
last prompt token (the user's end-of-turn), and the verdict of response token i is the response
heads at the last position of a full forward over everything up to and including token i. This is
what the released ``stream_moderate_from_ids`` computes (it re-runs the whole prefix for every
token), so it serves as the oracle of the equivalence tests and as the baseline of
``streamwarden bench engine`` ("the reference loop").
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

from workers.engine.scores import Head, HeadScores

if TYPE_CHECKING:
    from workers.engine.model import GuardModel


class ReferenceGuard:
    """Full-recompute scoring over one ``GuardModel``."""

    def __init__(self, model: GuardModel) -> None:
        self.model = model
        self.device = next(model.parameters()).device

    @torch.inference_mode()
    def all_positions(self, ids: Sequence[int], head: Head) -> HeadScores:
        """One full forward of ``ids`` alone; ``head`` scores at every position."""
        return self._scores(head, self._hidden(ids))

    @torch.inference_mode()
    def last_position(self, ids: Sequence[int], head: Head) -> HeadScores:
        """``head`` scores at the last position of a full forward of ``ids`` (one row)."""
        return self._scores(head, self._hidden(ids)[-1:])

    def _hidden(self, ids: Sequence[int]) -> torch.Tensor:
        input_ids = torch.tensor([list(ids)], dtype=torch.int64, device=self.device)
        hidden: torch.Tensor = self.model.model(input_ids=input_ids, use_cache=False).last_hidden_state[0]
        return hidden

    def _scores(self, head: Head, hidden: torch.Tensor) -> HeadScores:
        outputs = self.model.head_outputs(head, hidden)
        return self.model.to_scores({name: tensor.cpu() for name, tensor in outputs.items()})

    def score_prompt(self, prompt_ids: Sequence[int]) -> HeadScores:
        """The prompt verdict: query heads at the last prompt token."""
        return self.last_position(prompt_ids, Head.QUERY)

    def score_response(
        self, prompt_ids: Sequence[int], response_prefix: Sequence[int], response_ids: Sequence[int]
    ) -> HeadScores:
        """Response verdicts, one full-prefix forward per response token.

        The scaffolding between the prompt and the first content token (``response_prefix``) is
        context only: it is never scored, as in the official evaluation.
        """
        context = [*prompt_ids, *response_prefix]
        parts = [
            self.last_position([*context, *response_ids[: i + 1]], Head.RESPONSE) for i in range(len(response_ids))
        ]
        if not parts:
            return HeadScores.empty(len(self.model.head_labels(Head.RESPONSE).categories))
        return HeadScores.concat(parts)
