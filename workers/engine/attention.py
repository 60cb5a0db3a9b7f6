"""Attention over the engine's KV pages, plugged into transformers' attention interface.

The backbone is built with ``attn_implementation=ATTENTION_NAME``. Without a paged context the
registered function is transformers' own SDPA attention (the reference, the padded path); with a
``PagedContext`` passed as the forward keyword ``CONTEXT_KWARG``, each layer writes the new keys
and values into the pool pages of its rows and attends over those pages:

- ``sdpa`` kernel: the rows' pages are gathered into one padded tensor per layer and SDPA runs with
  a per-row causal mask (any device, any dtype);
- ``varlen`` kernel (CUDA, 16-bit): ``torch.nn.attention.varlen.varlen_attn`` reads the pages in
  place through a block table, with ragged queries and no padding or gather at all.

The model input is packed (``[1, total_new_tokens]``) in both cases; masks and tables are built once
per forward (``batch.py``) and shared by every layer.
"""

from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    from torch import nn

ATTENTION_NAME = "streamwarden"
CONTEXT_KWARG = "streamwarden_paged"
Kernel = Literal["sdpa", "varlen"]


@dataclass(frozen=True, slots=True)
class KVStorage:
    """The pool's tensors: per layer ``[num_pages, page_size, kv_heads, head_dim]`` keys and values."""

    keys: tuple[torch.Tensor, ...]
    values: tuple[torch.Tensor, ...]

    @classmethod
    def allocate(
        cls,
        layers: int,
        num_pages: int,
        page_size: int,
        kv_heads: int,
        head_dim: int,
        *,
        device: torch.device,
        dtype: torch.dtype,
    ) -> KVStorage:
        """Uninitialised pages (no memory is touched up front), except page 0, which padded page
        tables point at. Pages are zeroed when first used (``zero``): a masked-out position must
        never hold NaN, since attention multiplies it by zero and 0 * NaN poisons the row."""
        shape = (num_pages, page_size, kv_heads, head_dim)
        keys = tuple(torch.empty(shape, device=device, dtype=dtype) for _ in range(layers))
        values = tuple(torch.empty(shape, device=device, dtype=dtype) for _ in range(layers))
        storage = cls(keys, values)
        storage.zero((0,))
        return storage

    def zero(self, pages: tuple[int, ...]) -> None:
        """Zero ``pages`` in every layer."""
        if not pages:
            return
        index = torch.tensor(pages, dtype=torch.int64)
        device = self.keys[0].device
        if device.type == "cuda":  # do not wait for a forward still running (see batch.to_device)
            index = index.pin_memory().to(device, non_blocking=True)
        for tensor in (*self.keys, *self.values):
            tensor.index_fill_(0, index, 0)

    def write(self, layer: int, slots: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> None:
        """Store ``key``/``value`` (``[T, kv_heads, head_dim]``) at flat slot indices ``slots``."""
        pages = self.keys[layer]
        flat = (-1, pages.shape[2], pages.shape[3])
        pages.view(flat).index_copy_(0, slots, key)
        self.values[layer].view(flat).index_copy_(0, slots, value)

    def gather(self, layer: int, page_table: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Pages of each row as ``[rows, kv_heads, pages * page_size, head_dim]`` keys and values."""
        rows, pages = page_table.shape
        keys = self.keys[layer][page_table]
        values = self.values[layer][page_table]
        shape = (rows, pages * keys.shape[2], keys.shape[3], keys.shape[4])
        return keys.reshape(shape).transpose(1, 2), values.reshape(shape).transpose(1, 2)


@dataclass(frozen=True, slots=True)
class SdpaGroup:
    """Rows of a forward that the ``sdpa`` kernel pads to each other and attends in one call.

    A forward mixes one-token decode rows with prefills of hundreds of tokens; padding them all to
    the longest chunk and the longest past would multiply the attention work by the prefill's
    length (``batch.build_packed`` groups them so it never does).
    """

    tokens: torch.Tensor  # [T_g] int64, packed index of each of the group's new tokens
    page_table: torch.Tensor  # [rows_g, pages_g] int64
    query_index: torch.Tensor  # [T_g] int64, position of each token in [rows_g * max_q]
    mask: torch.Tensor  # [rows_g, 1, max_q, pages_g * page_size] bool
    max_q: int


@dataclass(frozen=True, slots=True)
class PagedContext:
    """Per-forward metadata of a packed batch over the KV pages (built by ``batch.build_packed``)."""

    storage: KVStorage
    kernel: Kernel
    slots: torch.Tensor  # [T] int64, flat pool slot of each new token
    # sdpa kernel: row groups, each padded on its own (queries and pages) with its own mask
    groups: tuple[SdpaGroup, ...]
    # varlen kernel
    block_table: torch.Tensor | None  # [rows, max_pages] int32
    cu_seq_q: torch.Tensor | None  # [rows + 1] int32
    cu_seq_k: torch.Tensor | None  # [rows + 1] int32
    seqused_k: torch.Tensor | None  # [rows] int32
    max_q: int
    max_k: int

    def attend(
        self, module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, scaling: float
    ) -> torch.Tensor:
        """Write this layer's new K/V, then attend: ``query [1, H, T, D]`` gives ``[1, T, H, D]``."""
        layer = int(module.layer_idx)  # type: ignore[arg-type]
        self.storage.write(layer, self.slots, key[0].transpose(0, 1), value[0].transpose(0, 1))
        packed_query = query[0].transpose(0, 1)  # [T, H, D]
        if self.kernel == "varlen":
            return self._varlen(layer, packed_query.contiguous(), scaling).unsqueeze(0)
        return self._sdpa(layer, packed_query, scaling).unsqueeze(0)

    def _sdpa(self, layer: int, query: torch.Tensor, scaling: float) -> torch.Tensor:
        if len(self.groups) == 1:
            return self._sdpa_group(layer, self.groups[0], query, scaling)
        out = torch.empty_like(query)
        for group in self.groups:
            out[group.tokens] = self._sdpa_group(layer, group, query[group.tokens], scaling)
        return out

    def _sdpa_group(self, layer: int, group: SdpaGroup, query: torch.Tensor, scaling: float) -> torch.Tensor:
        rows, max_q = group.page_table.shape[0], group.max_q
        heads, head_dim = query.shape[1], query.shape[2]
        padded = query.new_zeros(rows * max_q, heads, head_dim)
        padded[group.query_index] = query
        keys, values = self.storage.gather(layer, group.page_table)  # [rows, kv_heads, L, D]
        kv_heads = keys.shape[1]
        groups = heads // kv_heads
        # Grouped-query attention without copying K/V: the ``groups`` query heads that share a KV
        # head become ``groups * max_q`` query rows of that head (query head h reads KV head
        # h // groups), and the mask repeats along them. Masked SDPA kernels take no enable_gqa.
        grouped = (
            padded.view(rows, max_q, kv_heads, groups, head_dim)
            .permute(0, 2, 3, 1, 4)
            .reshape(rows, kv_heads, groups * max_q, head_dim)
        )
        mask = group.mask.repeat(1, 1, groups, 1) if groups > 1 else group.mask
        out = F.scaled_dot_product_attention(grouped, keys, values, attn_mask=mask, scale=scaling)
        out = out.view(rows, kv_heads, groups, max_q, head_dim).permute(0, 3, 1, 2, 4)
        return out.reshape(rows * max_q, heads, head_dim)[group.query_index]

    def _varlen(self, layer: int, query: torch.Tensor, scaling: float) -> torch.Tensor:
        from torch.nn.attention.varlen import varlen_attn

        assert self.cu_seq_q is not None and self.block_table is not None  # built for the varlen kernel
        out = varlen_attn(
            query,
            self.storage.keys[layer],
            self.storage.values[layer],
            self.cu_seq_q,
            self.cu_seq_k,
            self.max_q,
            self.max_k,
            scale=scaling,
            window_size=(-1, 0),
            enable_gqa=query.shape[1] != self.storage.keys[layer].shape[2],
            seqused_k=self.seqused_k,
            block_table=self.block_table,
        )
        assert isinstance(out, torch.Tensor)
        return out


def _attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    context = kwargs.pop(CONTEXT_KWARG, None)
    if context is None:
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        output, _ = sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
        return output, None
    if kwargs.get("sliding_window") is not None:
        raise NotImplementedError("the paged attention path does not implement sliding-window layers")
    scaling = kwargs.get("scaling")
    if scaling is None:
        scaling = query.shape[-1] ** -0.5
    return context.attend(module, query, key, value, float(scaling)), None


@functools.cache
def register_attention() -> str:
    """Register ``ATTENTION_NAME`` with transformers (attention and its SDPA mask); idempotent."""
    from transformers import AttentionInterface, AttentionMaskInterface
    from transformers.masking_utils import sdpa_mask

    AttentionInterface.register(ATTENTION_NAME, _attention_forward)
    AttentionMaskInterface.register(ATTENTION_NAME, sdpa_mask)
    return ATTENTION_NAME


def varlen_available(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether the ``varlen`` kernel can run here (CUDA, 16-bit, torch with paged ``varlen_attn``)."""
    if device.type != "cuda" or dtype not in (torch.float16, torch.bfloat16):
        return False
    try:
        from torch.nn.attention.varlen import varlen_attn
    except ImportError:
        return False
    # Older torch releases ship varlen_attn without paged KV (block_table) or GQA support.
    return {"block_table", "seqused_k", "enable_gqa"} <= set(inspect.signature(varlen_attn).parameters)
