"""The Qwen3Guard-Stream engine: native checkpoints, incremental KV state, batched scoring.

Modules, from the bottom up:

- ``checkpoint``: the on-disk format (config keys, tensor names, label maps), resolution of a
  directory or a Hugging Face id from the local cache, validation with precise errors, the writer.
- ``labels``: label maps read from config and the canonical risk order.
- ``scores``: head outputs as numpy arrays (no torch), shared by the engine, scheduler and backends.
- ``model``: the backbone (any transformers decoder built from ``config.model_type``) plus the
  response and query heads, loaded by tensor name.
- ``kv``: the KV page table: a byte budget, pages per conversation, LRU eviction (pure Python).
- ``batch`` / ``attention`` / ``runner``: one batched forward over many conversations with
  per-row positions, through the padded (transformers cache), paged (SDPA over the pool pages)
  or varlen (CUDA kernel reading the pages in place) attention path.
- ``jobs`` / ``scheduler``: the asyncio loop that collects requests (size or deadline) and runs
  forwards in a worker thread.
- ``commands``: ``streamwarden engine make-test-checkpoint`` and ``streamwarden engine inspect``.
- ``reference``: the reference semantics, one conversation, one token per call, full recompute.
- ``testing``: random-weight test checkpoints in the exact on-disk format, and true-size configs.

Other modules here (chat template, incremental text, debounce, planted test weights) serve the
worker around the engine. Importing ``workers.engine`` itself loads nothing.
"""

from __future__ import annotations
