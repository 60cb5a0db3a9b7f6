"""Last hidden states of the frozen backbone, extracted once, at the positions the heads read.

Sequences are sorted by length and packed into batches of at most ``max_batch_tokens`` (padded)
tokens, padded on the right: a causal decoder's positions never see later ones, so right padding
changes no real position and no attention mask is needed. Only the requested positions are kept,
in float16 on the CPU (a million positions of a 576-wide backbone take 1.2 GB), in the order the
sequences were given.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
from rich.progress import Progress

if TYPE_CHECKING:
    import numpy.typing as npt
    from transformers import PreTrainedModel

logger = logging.getLogger(__name__)

FEATURE_DTYPE = torch.float16


def plan_batches(lengths: Sequence[int], max_batch_tokens: int) -> list[list[int]]:
    """Indices of sequences per batch: longest first, each batch's ``rows * longest <= budget``.

    A sequence longer than the budget gets a batch of its own.
    """
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    batches: list[list[int]] = []
    for index in order:
        if batches and (len(batches[-1]) + 1) * lengths[batches[-1][0]] <= max_batch_tokens:
            batches[-1].append(index)
        else:
            batches.append([index])
    return batches


@torch.inference_mode()
def extract_features(
    model: PreTrainedModel,
    sequences: Sequence[Sequence[int]],
    positions: Sequence[npt.NDArray[np.int64]],
    *,
    max_batch_tokens: int,
    description: str = "hidden states",
    progress: bool = True,
) -> torch.Tensor:
    """Last hidden states of ``sequences[i]`` at ``positions[i]``, concatenated in order.

    Returns:
        ``[sum(len(p) for p in positions), hidden_size]`` float16 on the CPU.

    Raises:
        ValueError: a position is outside its sequence, or a state is not finite in float16.
    """
    device = next(model.parameters()).device
    counts = np.array([len(p) for p in positions], dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(counts)])
    out = torch.empty((int(starts[-1]), int(model.config.hidden_size)), dtype=FEATURE_DTYPE)
    lengths = [len(s) for s in sequences]
    for ids, where in zip(sequences, positions, strict=True):
        if len(where) and (where.min() < 0 or where.max() >= len(ids)):
            raise ValueError(f"positions {where.min()}..{where.max()} fall outside a sequence of {len(ids)} ids")
    batches = plan_batches(lengths, max_batch_tokens)
    with Progress(disable=not progress) as bar:
        task = bar.add_task(description, total=sum(lengths))
        for batch in batches:
            longest = lengths[batch[0]]
            input_ids = torch.zeros((len(batch), longest), dtype=torch.int64)
            for row, index in enumerate(batch):
                input_ids[row, : lengths[index]] = torch.as_tensor(list(sequences[index]), dtype=torch.int64)
            hidden = model(input_ids=input_ids.to(device), use_cache=False).last_hidden_state
            # One gather and one device-to-host copy per batch, then plain CPU slices into place.
            rows = torch.cat([torch.full((int(counts[i]),), row, dtype=torch.int64) for row, i in enumerate(batch)])
            columns = torch.cat([torch.as_tensor(positions[i], dtype=torch.int64) for i in batch])
            gathered = hidden[rows.to(device), columns.to(device)].to("cpu", FEATURE_DTYPE)
            cursor = 0
            for index in batch:
                out[starts[index] : starts[index + 1]] = gathered[cursor : cursor + counts[index]]
                cursor += int(counts[index])
            bar.advance(task, sum(lengths[i] for i in batch))
    if not bool(torch.isfinite(out).all()):
        raise ValueError("a hidden state overflows float16; extract in a wider feature dtype")
    logger.info(
        "extracted %s hidden states from %s sequences (%s tokens) in %s batches",
        len(out),
        len(sequences),
        sum(lengths),
        len(batches),
    )
    return out
