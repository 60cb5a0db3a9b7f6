"""Tensors of one batched forward: slots, masks and the varlen metadata, checked on the CPU.

The varlen kernel itself needs CUDA (``tests/gpu``); here its metadata is checked against a
direct reading of its documented contract (block table, ``seqused_k``, bottom-right causal
alignment), evaluated with plain tensor ops and compared with the SDPA kernel's output.
"""

from __future__ import annotations

import torch

from workers.engine.attention import KVStorage
from workers.engine.batch import build_packed, build_padded
from workers.engine.jobs import StepPlan, StepRow
from workers.engine.scores import Head

CPU = torch.device("cpu")


def _plan(page_size: int) -> StepPlan:
    rows = [(0, 5, (3, 0)), (7, 2, (1, 4, 10)), (2, 1, (2,)), (9, 9, (6, 5, 7, 8, 9))]  # (past, new, pages)
    return StepPlan(
        tuple(
            StepRow(f"r{i}", past, list(range(100 * i, 100 * i + new)), Head.RESPONSE, min(new, 2), pages)
            for i, (past, new, pages) in enumerate(rows)
        )
    )


def test_slots_positions_and_outputs() -> None:
    storage = KVStorage.allocate(1, 12, 4, 1, 2, device=CPU, dtype=torch.float32)
    batch = build_packed(_plan(4), storage, page_size=4, kernel="sdpa", device=CPU)
    assert batch.input_ids.tolist() == [[0, 1, 2, 3, 4, 100, 101, 200, 300, 301, 302, 303, 304, 305, 306, 307, 308]]
    assert batch.position_ids.tolist() == [[0, 1, 2, 3, 4, 7, 8, 2, 9, 10, 11, 12, 13, 14, 15, 16, 17]]
    # position p of a row lives in slot pages[p // 4] * 4 + p % 4
    assert batch.context.slots.tolist() == [12, 13, 14, 15, 0, 19, 40, 10, 29, 30, 31, 32, 33, 34, 35, 36, 37]
    assert batch.index.output_token.tolist() == [3, 4, 5, 6, 7, 15, 16]
    (group,) = batch.context.groups  # every row is a short chunk: one padded SDPA call
    assert group.mask.shape == (4, 1, 9, 20) and group.tokens.tolist() == list(range(17))
    assert group.mask[1, 0, 0].tolist() == [True] * 8 + [False] * 12  # row 1's first new token sits at 7


def test_a_long_row_is_not_padded_together_with_short_ones() -> None:
    storage = KVStorage.allocate(1, 40, 4, 1, 2, device=CPU, dtype=torch.float32)
    rows = [(3, 1, (1,)), (0, 40, tuple(range(2, 12))), (5, 2, (12, 13))]  # (past, new, pages)
    plan = StepPlan(
        tuple(
            StepRow(f"r{i}", past, list(range(new)), Head.RESPONSE, 1, pages)
            for i, (past, new, pages) in enumerate(rows)
        )
    )
    short, long = build_packed(plan, storage, page_size=4, kernel="sdpa", device=CPU).context.groups
    assert short.max_q == 2 and short.page_table.shape == (2, 2) and short.tokens.tolist() == [0, 41, 42]
    assert long.max_q == 40 and long.page_table.shape == (1, 10) and long.tokens.tolist() == list(range(1, 41))


def test_varlen_metadata_follows_the_kernel_contract() -> None:
    generator = torch.Generator().manual_seed(0)
    page_size, heads, kv_heads, dim = 4, 4, 2, 8
    storage = KVStorage.allocate(1, 12, page_size, kv_heads, dim, device=CPU, dtype=torch.float32)
    storage.keys[0].copy_(torch.randn(storage.keys[0].shape, generator=generator))
    storage.values[0].copy_(torch.randn(storage.values[0].shape, generator=generator))
    plan = _plan(page_size)
    sdpa = build_packed(plan, storage, page_size=page_size, kernel="sdpa", device=CPU).context
    varlen = build_packed(plan, storage, page_size=page_size, kernel="varlen", device=CPU).context
    assert varlen.cu_seq_q is not None and varlen.cu_seq_q.tolist() == [0, 5, 7, 8, 17]
    assert varlen.seqused_k is not None and varlen.seqused_k.tolist() == [5, 9, 3, 18]
    assert varlen.cu_seq_k is not None and varlen.cu_seq_k.tolist() == [0, 5, 14, 17, 35]
    assert varlen.block_table is not None and varlen.block_table.dtype == torch.int32
    assert (varlen.max_q, varlen.max_k) == (9, 18)

    total = plan.tokens
    query = torch.randn(total, heads, dim, generator=generator)
    expected = sdpa._sdpa(0, query, dim**-0.5)
    # The contract, read literally: row b attends its first seqused_k[b] keys through its block table,
    # query i of n seeing keys j <= seqused_k[b] - n + i (bottom-right causal alignment).
    got = torch.empty_like(expected)
    for b in range(len(plan.rows)):
        q0, q1 = int(varlen.cu_seq_q[b]), int(varlen.cu_seq_q[b + 1])
        used = int(varlen.seqused_k[b])
        pages = varlen.block_table[b].long()
        keys = storage.keys[0][pages].reshape(-1, kv_heads, dim)[:used].repeat_interleave(heads // kv_heads, 1)
        values = storage.values[0][pages].reshape(-1, kv_heads, dim)[:used].repeat_interleave(heads // kv_heads, 1)
        n = q1 - q0
        scores = torch.einsum("qhd,khd->hqk", query[q0:q1], keys) * dim**-0.5
        allowed = torch.arange(used)[None, :] <= (used - n + torch.arange(n))[:, None]
        scores = scores.masked_fill(~allowed, float("-inf"))
        got[q0:q1] = torch.einsum("hqk,khd->qhd", scores.softmax(-1), values)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_padded_batch_masks_the_middle_of_the_cache() -> None:
    batch = build_padded(_plan(4), page_size=4, device=CPU)
    assert batch.past_width == 12  # three pages cover the longest past (9)
    row = batch.attention_mask[1].tolist()
    assert row == [1] * 7 + [0] * 5 + [1, 1] + [0] * 7  # 7 past tokens, padding, 2 new of 9
    assert batch.position_ids[3, :3].tolist() == [9, 10, 11]


def test_attention_resolution_on_the_cpu() -> None:
    from workers.engine.kv import KVLayout
    from workers.engine.runner import resolve_attention, varlen_probe

    layout = KVLayout(layers=1, kv_heads=2, head_dim=8, dtype_bytes=4, page_size=4)
    assert resolve_attention("auto", CPU, torch.float32, layout) == "paged"
    assert resolve_attention("padded", CPU, torch.float32, layout) == "padded"
    try:
        resolve_attention("varlen", CPU, torch.bfloat16, layout)
    except ValueError as exc:
        assert "needs CUDA" in str(exc)
    else:
        raise AssertionError("varlen cannot run on the CPU")
    # The probe reports the kernel's failure instead of raising it.
    problem = varlen_probe(CPU, torch.bfloat16, layout)
    assert problem is not None and "Error" in problem
