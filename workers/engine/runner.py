"""Runs planned forwards on the device: writes new KV into the pool, returns head scores.

``BatchRunner.launch`` (and ``LaunchedForward.wait``) is the only code that touches the model and
the KV tensors; the scheduler calls it from its worker thread. On CUDA a launch only queues the
work (host-device copies are asynchronous, results land in pinned memory behind an event), so
the scheduler can plan the next forward meanwhile. Attention paths (``Attention``):

- ``padded``: the simple path. Past KV is gathered from the pages into a transformers
  ``DynamicCache``; rows are padded; a 2D mask covers past + new positions.
- ``paged``: packed rows, each layer writes into the pages and attends over them with SDPA and a
  per-row mask (the rows' pages are gathered per layer; no cache object, no concatenation).
- ``varlen``: packed rows, CUDA ``varlen_attn`` reads the pages in place through a block table.

``auto`` picks ``varlen`` on CUDA in 16-bit when torch provides it, otherwise ``paged`` (the faster
of the two portable paths in ``docs/benchmarks.md``).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Literal

import torch

from workers.engine.attention import CONTEXT_KWARG, Kernel, KVStorage, varlen_available
from workers.engine.batch import build_packed, build_padded, to_device
from workers.engine.jobs import StepPlan, StepRow
from workers.engine.kv import KVLayout, KVPool
from workers.engine.model import GuardModel
from workers.engine.scores import Head, HeadScores

if TYPE_CHECKING:
    from workers.engine.batch import RowIndex

logger = logging.getLogger(__name__)

Attention = Literal["auto", "padded", "paged", "varlen"]
ATTENTION_CHOICES: tuple[Attention, ...] = ("auto", "padded", "paged", "varlen")


def resolve_device(name: str) -> torch.device:
    """``auto`` is CUDA when available, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {name!r} requested but CUDA is not available")
    return device


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """``auto`` is bfloat16 on CUDA and on CPUs with bfloat16 instructions, float32 elsewhere
    (``workers.engine.precision``)."""
    if name == "auto":
        from workers.engine.precision import cpu_has_native_bfloat16

        native = device.type == "cuda" or (device.type == "cpu" and cpu_has_native_bfloat16())
        return torch.bfloat16 if native else torch.float32
    dtypes = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    if name not in dtypes:
        raise ValueError(f"unknown dtype {name!r}; expected auto or one of {sorted(dtypes)}")
    return dtypes[name]


def resolve_attention(name: Attention, device: torch.device, dtype: torch.dtype, layout: KVLayout) -> Attention:
    """The concrete attention path for ``name`` on ``device`` in ``dtype``.

    ``auto`` takes ``varlen`` only where it runs and agrees with the ``paged`` kernel on a probe
    (a device whose attention backends reject the page layout would otherwise fail every
    forward); the choice and any reason for not taking ``varlen`` are logged.

    Raises:
        ValueError: ``varlen`` was asked for where it cannot run.
    """
    if name == "auto":
        if not varlen_available(device, dtype):
            return "paged"
        problem = varlen_probe(device, dtype, layout)
        if problem is not None:
            logger.warning("varlen attention unusable here (%s); using the paged path", problem)
            return "paged"
        return "varlen"
    if name == "varlen":
        if not varlen_available(device, dtype):
            raise ValueError(f"the varlen attention path needs CUDA in float16/bfloat16, not {device} {dtype}")
        problem = varlen_probe(device, dtype, layout)
        if problem is not None:
            raise ValueError(f"the varlen attention path fails here: {problem}")
    return name


def varlen_probe(device: torch.device, dtype: torch.dtype, layout: KVLayout) -> str | None:
    """Run both page kernels on a small random batch; None if they agree, else what went wrong."""
    generator = torch.Generator(device="cpu").manual_seed(0)
    rows = ((0, 3), (21, 1), (5, 40))  # (past tokens, new tokens)
    pages = [layout.pages_for(past + new) for past, new in rows]
    storage = KVStorage.allocate(
        1, sum(pages), layout.page_size, layout.kv_heads, layout.head_dim, device=device, dtype=dtype
    )
    for tensor in (*storage.keys, *storage.values):
        tensor.copy_(torch.randn(tensor.shape, generator=generator).to(device, dtype))
    first = [sum(pages[:i]) for i in range(len(rows))]
    plan = StepPlan(
        tuple(
            StepRow(str(i), past, [0] * new, Head.RESPONSE, new, tuple(range(first[i], first[i] + pages[i])))
            for i, (past, new) in enumerate(rows)
        )
    )
    heads = layout.kv_heads * 2
    query = torch.randn(1, heads, plan.tokens, layout.head_dim, generator=generator).to(device, dtype)
    key = torch.randn(1, layout.kv_heads, plan.tokens, layout.head_dim, generator=generator).to(device, dtype)
    value = torch.randn(key.shape, generator=generator).to(device, dtype)
    layer = _ProbeLayer()
    try:
        outputs = [
            build_packed(plan, storage, page_size=layout.page_size, kernel=kernel, device=device)
            .context.attend(layer, query, key, value, layout.head_dim**-0.5)
            .float()
            for kernel in ("sdpa", "varlen")
        ]
    except (RuntimeError, ValueError, TypeError) as exc:
        return f"{type(exc).__name__}: {exc}"
    error = float((outputs[0] - outputs[1]).abs().max())
    return None if error < 0.05 else f"kernels disagree by {error:.3g}"


class _ProbeLayer(torch.nn.Module):
    layer_idx = 0


class BatchRunner:
    """The model, the KV pool and its tensors on one device."""

    def __init__(
        self,
        model: GuardModel,
        *,
        kv_budget_bytes: int,
        page_size: int,
        attention: Attention = "auto",
        pipeline_depth: int | None = None,
    ) -> None:
        """``pipeline_depth``: forwards the scheduler may keep in flight; by default two on CUDA
        (one runs while the next is planned and launched) and one on the CPU (where a launch
        computes everything before it returns)."""
        parameter = next(model.parameters())
        self.model = model
        self.device = parameter.device
        self.dtype = parameter.dtype
        config = model.backbone_config
        self.layout = KVLayout.from_config(config, dtype_bytes=parameter.element_size(), page_size=page_size)
        self.attention = resolve_attention(attention, self.device, self.dtype, self.layout)
        layer_types = set(getattr(config, "layer_types", None) or ["full_attention"])
        if self.attention != "padded" and layer_types != {"full_attention"}:
            raise ValueError(f"the {self.attention} attention path needs full attention layers, got {layer_types}")
        self.pool = KVPool(self.layout, kv_budget_bytes)
        self.storage = KVStorage.allocate(
            self.layout.layers,
            self.pool.num_pages,
            page_size,
            self.layout.kv_heads,
            self.layout.head_dim,
            device=self.device,
            dtype=self.dtype,
        )
        self.max_positions = int(getattr(config, "max_position_embeddings", 1 << 30))
        self.pipeline_depth = pipeline_depth or (2 if self.device.type == "cuda" else 1)
        logger.info(
            "engine on %s (%s, %s attention): %d KV pages of %d tokens, %d bytes per token",
            self.device,
            self.dtype,
            self.attention,
            self.pool.num_pages,
            page_size,
            self.layout.bytes_per_token,
        )

    def num_categories(self, head: Head) -> int:
        return len(self.model.head_labels(head).categories)

    def forward(self, plan: StepPlan) -> list[HeadScores | None]:
        """``launch`` and ``wait`` in one call."""
        return self.launch(plan).wait()

    @torch.inference_mode()
    def launch(self, plan: StepPlan) -> LaunchedForward:
        """Start ``plan``: new KV goes to the pages, heads run only at requested positions.

        On CUDA this returns once the work is queued on the device; ``LaunchedForward.wait`` gives
        one entry per row: its scores at its last ``outputs`` positions, or None when the row wants
        none. The page table is not updated here (the scheduler commits after ``wait``).
        """
        self.storage.zero(plan.fresh_pages)
        if self.attention == "padded":
            hidden, index = self._forward_padded(plan)
        else:
            hidden, index = self._forward_packed(plan)
        return self._launch_heads(plan, hidden, index)

    def _forward_packed(self, plan: StepPlan) -> tuple[torch.Tensor, RowIndex]:
        kernel: Kernel = "varlen" if self.attention == "varlen" else "sdpa"
        batch = build_packed(plan, self.storage, page_size=self.layout.page_size, kernel=kernel, device=self.device)
        # A prepared 4D mask makes transformers skip its own mask construction; the paged
        # attention reads positions and rows from the context instead.
        no_mask = torch.ones(1, 1, 1, 1, dtype=torch.bool, device=self.device)
        output = self.model.model(
            input_ids=batch.input_ids,
            position_ids=batch.position_ids,
            attention_mask=no_mask,
            use_cache=False,
            **{CONTEXT_KWARG: batch.context},
        )
        hidden = output.last_hidden_state[0]
        return hidden[to_device(batch.index.output_token, self.device)], batch.index

    def _forward_padded(self, plan: StepPlan) -> tuple[torch.Tensor, RowIndex]:
        from transformers import DynamicCache

        batch = build_padded(plan, page_size=self.layout.page_size, device=self.device)
        cache = DynamicCache(config=self.model.backbone_config)
        if batch.past_width:
            for layer in range(self.layout.layers):
                keys, values = self.storage.gather(layer, batch.past_pages)
                cache.update(keys, values, layer)
        output = self.model.model(
            input_ids=batch.input_ids,
            position_ids=batch.position_ids,
            attention_mask=batch.attention_mask,
            past_key_values=cache,
            use_cache=True,
        )
        rows, max_new = batch.input_ids.shape
        for layer in range(self.layout.layers):
            cached_keys = cache.layers[layer].keys  # type: ignore[union-attr]
            cached_values = cache.layers[layer].values  # type: ignore[union-attr]
            assert isinstance(cached_keys, torch.Tensor) and isinstance(cached_values, torch.Tensor)
            new_keys = (
                cached_keys[:, :, batch.past_width :].transpose(1, 2).reshape(rows * max_new, -1, self.layout.head_dim)
            )
            new_values = (
                cached_values[:, :, batch.past_width :]
                .transpose(1, 2)
                .reshape(rows * max_new, -1, self.layout.head_dim)
            )
            self.storage.write(layer, batch.slots, new_keys[batch.flat_new], new_values[batch.flat_new])
        hidden = output.last_hidden_state.reshape(rows * max_new, -1)
        flat_output = batch.flat_new[to_device(batch.index.output_token, self.device)]
        return hidden[flat_output], batch.index

    def _launch_heads(self, plan: StepPlan, hidden: torch.Tensor, index: RowIndex) -> LaunchedForward:
        """Run each head on its rows' output positions; copy the results to the host without waiting."""
        counts = torch.tensor(index.output_counts, dtype=torch.int64)
        on_cuda = self.device.type == "cuda"
        heads: list[tuple[Head, dict[str, torch.Tensor]]] = []
        for head in (Head.QUERY, Head.RESPONSE):
            is_head = torch.tensor([row.head is head for row in plan.rows])
            if not bool((is_head & (counts > 0)).any()):
                continue
            select = torch.repeat_interleave(is_head, counts).nonzero().squeeze(1)
            outputs = self.model.head_outputs(head, hidden[to_device(select, self.device)])
            host = {}
            for name, tensor in outputs.items():
                host[name] = torch.empty(tensor.shape, dtype=tensor.dtype, pin_memory=on_cuda)
                host[name].copy_(tensor, non_blocking=on_cuda)
            heads.append((head, host))
        event = None
        if on_cuda:
            event = torch.cuda.Event()  # type: ignore[no-untyped-call]
            event.record()
        return LaunchedForward(plan, heads, event)


class LaunchedForward:
    """A started forward; ``wait`` returns its per-row scores once they are on the host."""

    def __init__(
        self,
        plan: StepPlan,
        heads: list[tuple[Head, dict[str, torch.Tensor]]],
        event: torch.cuda.Event | None,
    ) -> None:
        self._plan = plan
        self._heads = heads
        self._event = event

    def wait(self) -> list[HeadScores | None]:
        if self._event is not None:
            self._event.synchronize()
        rows = self._plan.rows
        results: list[HeadScores | None] = [None] * len(rows)
        for head, host in self._heads:
            offset = 0
            for i, row in enumerate(rows):
                if row.head is head and row.outputs:
                    results[i] = GuardModel.to_scores(host, offset, offset + row.outputs)
                    offset += row.outputs
        return results
