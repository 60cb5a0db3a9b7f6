"""The tensors of one batched forward, built from a ``jobs.StepPlan``.

A ``StepPlan`` lists rows; each row feeds ``ids`` to conversation ``key`` at positions
``start .. start+len(ids)`` and wants head outputs at its last ``outputs`` positions. Rows have
different past lengths and chunk lengths. The tensors are built without per-token Python loops:

- ``build_packed`` (paged path): one packed row ``[1, T]`` of all new tokens with explicit
  position ids, plus a ``PagedContext`` (pool slots of the new tokens, page tables, masks or
  varlen offsets) that every layer's attention uses.
- ``build_padded`` (simple path): ``[rows, max_new]`` inputs with per-row position ids, the past
  gathered from the pages into a transformers ``DynamicCache`` (``[rows, max_past]``, padding in
  the middle of the cache), and a 2D attention mask over past + new positions (padding = 0).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch

from workers.engine.attention import Kernel, KVStorage, PagedContext, SdpaGroup
from workers.engine.jobs import StepPlan


@dataclass(frozen=True, slots=True)
class RowIndex:
    """Per-row sizes and where each row's outputs sit in the flat output list."""

    starts: torch.Tensor  # [rows] int64
    lengths: torch.Tensor  # [rows] int64
    row_of_token: torch.Tensor  # [T]
    position: torch.Tensor  # [T] position of each new token in its conversation
    offset_in_row: torch.Tensor  # [T] index of each new token within its row's chunk
    output_token: torch.Tensor  # [n_out] packed index of each output position
    output_counts: tuple[int, ...]  # outputs per row


def row_index(plan: StepPlan) -> RowIndex:
    rows = plan.rows
    starts = torch.tensor([row.start for row in rows], dtype=torch.int64)
    lengths = torch.tensor([len(row.ids) for row in rows], dtype=torch.int64)
    row_ids = torch.arange(len(rows))
    row_of_token = torch.repeat_interleave(row_ids, lengths)
    first_token = torch.cumsum(lengths, 0) - lengths
    offset_in_row = torch.arange(int(lengths.sum())) - first_token[row_of_token]
    counts = torch.tensor([row.outputs for row in rows], dtype=torch.int64)
    output_row = torch.repeat_interleave(row_ids, counts)
    first_output = torch.cumsum(counts, 0) - counts
    output_token = (first_token + lengths - counts)[output_row] + (
        torch.arange(int(counts.sum())) - first_output[output_row]
    )
    return RowIndex(
        starts=starts,
        lengths=lengths,
        row_of_token=row_of_token,
        position=starts[row_of_token] + offset_in_row,
        offset_in_row=offset_in_row,
        output_token=output_token,
        output_counts=tuple(row.outputs for row in rows),
    )


def page_table(plan: StepPlan, pages_per_row: int | None = None) -> torch.Tensor:
    """``[rows, max_pages]`` page ids, padded with page 0 (never read: masked or beyond seq length)."""
    width = pages_per_row if pages_per_row is not None else max(len(row.pages) for row in plan.rows)
    return torch.tensor(
        [list(row.pages[:width]) + [0] * (width - min(width, len(row.pages))) for row in plan.rows],
        dtype=torch.int64,
    )


def to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Host-to-device copy that does not wait for the device, where an earlier forward may still
    be running (the scheduler pipelines forwards): staged in pinned memory, copied asynchronously."""
    if device.type != "cuda":
        return tensor.to(device)
    return tensor.pin_memory().to(device, non_blocking=True)


def packed_ids(plan: StepPlan) -> torch.Tensor:
    return torch.tensor(list(itertools.chain.from_iterable(row.ids for row in plan.rows)), dtype=torch.int64)


@dataclass(frozen=True, slots=True)
class PackedBatch:
    input_ids: torch.Tensor  # [1, T]
    position_ids: torch.Tensor  # [1, T]
    context: PagedContext
    index: RowIndex


def build_packed(
    plan: StepPlan, storage: KVStorage, *, page_size: int, kernel: Kernel, device: torch.device
) -> PackedBatch:
    """Tensors of the paged path; see the module docstring."""
    index = row_index(plan)
    table = page_table(plan)
    slots = table[index.row_of_token, index.position // page_size] * page_size + index.position % page_size
    max_q = int(index.lengths.max())
    seq_k = index.starts + index.lengths
    cu_seq_q: torch.Tensor | None = None
    cu_seq_k: torch.Tensor | None = None
    block_table: torch.Tensor | None = None
    seqused_k: torch.Tensor | None = None
    if kernel == "varlen":
        zero = torch.zeros(1, dtype=torch.int64)
        cu_seq_q = to_device(torch.cat([zero, torch.cumsum(index.lengths, 0)]).to(torch.int32), device)
        cu_seq_k = to_device(torch.cat([zero, torch.cumsum(seq_k, 0)]).to(torch.int32), device)
        block_table = to_device(table.to(torch.int32), device)
        seqused_k = to_device(seq_k.to(torch.int32), device)
    groups = () if kernel == "varlen" else sdpa_groups(plan, index, page_size=page_size, device=device)
    context = PagedContext(
        storage=storage,
        kernel=kernel,
        slots=to_device(slots, device),
        groups=groups,
        block_table=block_table,
        cu_seq_q=cu_seq_q,
        cu_seq_k=cu_seq_k,
        seqused_k=seqused_k,
        max_q=max_q,
        max_k=int(seq_k.max()),
    )
    return PackedBatch(
        input_ids=to_device(packed_ids(plan), device)[None, :],
        position_ids=to_device(index.position, device)[None, :],
        context=context,
        index=index,
    )


SHORT_ROW_TOKENS = 16
"""Rows of at most this many new tokens (streamed chunks) share one padded SDPA call; each longer
row (a prefill, a rebuild) gets its own, so no chunk is padded to a prefill's length."""


def sdpa_groups(plan: StepPlan, index: RowIndex, *, page_size: int, device: torch.device) -> tuple[SdpaGroup, ...]:
    """The ``sdpa`` kernel's row groups (``attention.SdpaGroup``): the short rows together, each long
    row alone; each group padded only to its own longest chunk and past."""
    lengths = index.lengths.tolist()
    short = [i for i, n in enumerate(lengths) if n <= SHORT_ROW_TOKENS]
    members = ([short] if short else []) + [[i] for i, n in enumerate(lengths) if n > SHORT_ROW_TOKENS]
    first_token = torch.cumsum(index.lengths, 0) - index.lengths
    groups = []
    for rows in members:
        selected = torch.tensor(rows, dtype=torch.int64)
        group_lengths = index.lengths[selected]
        max_q = int(group_lengths.max())
        width = max(len(plan.rows[i].pages) for i in rows)
        table = torch.tensor(
            [list(plan.rows[i].pages) + [0] * (width - len(plan.rows[i].pages)) for i in rows], dtype=torch.int64
        )
        local_row = torch.repeat_interleave(torch.arange(len(rows)), group_lengths)
        tokens = first_token[selected][local_row] + (
            torch.arange(int(group_lengths.sum())) - (torch.cumsum(group_lengths, 0) - group_lengths)[local_row]
        )
        key_positions = torch.arange(width * page_size)
        query_positions = index.starts[selected][:, None] + torch.arange(max_q)[None, :]
        mask = (key_positions[None, None, :] <= query_positions[:, :, None]).unsqueeze(1)
        groups.append(
            SdpaGroup(
                tokens=to_device(tokens, device),
                page_table=to_device(table, device),
                query_index=to_device(local_row * max_q + index.offset_in_row[tokens], device),
                mask=to_device(mask, device),
                max_q=max_q,
            )
        )
    return tuple(groups)


@dataclass(frozen=True, slots=True)
class PaddedBatch:
    input_ids: torch.Tensor  # [rows, max_new]
    position_ids: torch.Tensor  # [rows, max_new]
    attention_mask: torch.Tensor  # [rows, past_width + max_new], 1 = attend
    past_pages: torch.Tensor  # [rows, past_pages] page ids covering each row's past
    past_width: int  # past_pages * page_size
    flat_new: torch.Tensor  # [T] index of each new token in the [rows * max_new] layout
    slots: torch.Tensor  # [T] pool slot of each new token
    index: RowIndex


def build_padded(plan: StepPlan, *, page_size: int, device: torch.device) -> PaddedBatch:
    """Tensors of the simple path; see the module docstring."""
    index = row_index(plan)
    rows = len(plan.rows)
    max_new = int(index.lengths.max())
    past_pages = max((row.start + page_size - 1) // page_size for row in plan.rows)
    past_width = past_pages * page_size
    table = page_table(plan)
    slots = table[index.row_of_token, index.position // page_size] * page_size + index.position % page_size
    flat_new = index.row_of_token * max_new + index.offset_in_row
    input_ids = torch.zeros(rows * max_new, dtype=torch.int64)
    input_ids[flat_new] = packed_ids(plan)
    position_ids = index.starts[:, None] + torch.arange(max_new)[None, :]
    past_valid = torch.arange(past_width)[None, :] < index.starts[:, None]
    new_valid = torch.arange(max_new)[None, :] < index.lengths[:, None]
    return PaddedBatch(
        input_ids=to_device(input_ids.view(rows, max_new), device),
        position_ids=to_device(position_ids, device),
        attention_mask=to_device(torch.cat([past_valid, new_valid], dim=1).to(torch.int64), device),
        past_pages=to_device(table[:, :past_pages].contiguous(), device),
        past_width=past_width,
        flat_new=to_device(flat_new, device),
        slots=to_device(slots, device),
        index=index,
    )
