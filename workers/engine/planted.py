"""A tiny test checkpoint with planted, predictable behaviour, for pipeline tests and benchmarks.

Random weights give arbitrary verdicts; end-to-end tests need a model whose verdicts are known in
advance but which still runs the real engine (attention, KV cache, batching). This writes the
tiny architecture (real Qwen3 tokenizer and vocabulary, exact Qwen3Guard-Stream format, marked as
a test checkpoint) with hand-set weights:

- every token of ``UNSAFE_WORDS`` is Unsafe (category Violent) for the response heads, every
  token of ``CONTROVERSIAL_WORDS`` Controversial (Unethical Acts); all other tokens are Safe. So a
  response is cut off at the second token of an unsafe word, exactly as the debounce prescribes;
- the query heads see, through a uniform attention head, the share of such tokens in the prompt:
  a prompt containing an unsafe word is Unsafe at its end-of-turn token, one containing a
  controversial word Controversial, any other prompt Safe.

How: layer 0's attention has zero query/key projections (uniform attention over the prefix) and
copies the "unsafe" and "controversial" embedding features into two accumulator features; all
other blocks are zeroed, so the residual stream is the embedding plus those accumulators. The
heads read those features, with a constant feature as the reference level.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from workers.engine.checkpoint import METADATA_KEY, write_checkpoint
from workers.engine.template import packaged_qwen3_tokenizer_dir
from workers.engine.testing import guard_config, random_guard_model

if TYPE_CHECKING:
    import torch

UNSAFE_WORDS: tuple[str, ...] = (" DETONATE", "DETONATE")
CONTROVERSIAL_WORDS: tuple[str, ...] = (" GREYZONE", "GREYZONE")

# Residual-stream features (the tiny model's hidden size is 64).
_UNSAFE, _UNSAFE_SHARE, _ONE, _CONTRO, _CONTRO_SHARE = 0, 1, 2, 3, 4
_NOISE = slice(8, 64)
_GAIN = 60.0  # accumulator gain: one unsafe token among a few hundred still reads as unsafe
_VIOLENT, _UNETHICAL = 0, 7  # category indices in the released maps


def planted_token_ids(words: tuple[str, ...]) -> set[int]:
    """The token ids the planted model treats as ``words`` (every token of every word)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(packaged_qwen3_tokenizer_dir())
    return {i for w in words for i in tokenizer.encode(w, add_special_tokens=False)}


def make_planted_checkpoint(out: Path, *, seed: int = 0) -> Path:
    """Write the planted test checkpoint to ``out`` and return ``out``."""
    import torch

    config = guard_config("tiny")
    config["torch_dtype"] = "float32"
    config[METADATA_KEY] = {"test_checkpoint": True, "name": "test-tiny-planted"}
    model = random_guard_model("tiny", device=torch.device("cpu"), dtype=torch.float32, seed=seed)
    state = {k: torch.zeros_like(v) for k, v in model.state_dict().items()}
    for name, tensor in state.items():
        if name.endswith("norm.weight"):
            tensor.fill_(1.0)  # every RMSNorm is plain normalisation
    _embeddings(state["model.embed_tokens.weight"], seed)
    _attention(state, head_dim=int(config["head_dim"]))
    _heads(state)
    return write_checkpoint(out, config, state, tokenizer_dir=packaged_qwen3_tokenizer_dir())


def _embeddings(embed: torch.Tensor, seed: int) -> None:
    import torch

    generator = torch.Generator().manual_seed(seed)
    noise = torch.randn(embed.shape[0], _NOISE.stop - _NOISE.start, generator=generator)
    embed[:, _NOISE] = 0.5 * noise / noise.norm(dim=1, keepdim=True)  # varied tokens, equal norms
    embed[:, _ONE] = 1.0
    embed[sorted(planted_token_ids(UNSAFE_WORDS)), _UNSAFE] = 1.0
    embed[sorted(planted_token_ids(CONTROVERSIAL_WORDS)), _CONTRO] = 1.0


def _attention(state: dict[str, torch.Tensor], head_dim: int) -> None:
    # q = k = 0: every position attends uniformly to its prefix. kv head 0 carries the unsafe
    # feature, kv head 1 the controversial one; query heads 0 and 2 (one per kv group) write them
    # into the share features.
    prefix = "model.layers.0.self_attn."
    v, o = state[prefix + "v_proj.weight"], state[prefix + "o_proj.weight"]
    v[0, _UNSAFE] = 1.0
    v[head_dim, _CONTRO] = 1.0
    o[_UNSAFE_SHARE, 0] = _GAIN
    o[_CONTRO_SHARE, 2 * head_dim] = _GAIN


def _heads(state: dict[str, torch.Tensor]) -> None:
    for path, (unsafe, contro) in {
        "": (_UNSAFE, _CONTRO),
        "query_": (_UNSAFE_SHARE, _CONTRO_SHARE),
    }.items():
        pre = state[f"{path}risk_level_category_pre.weight"]
        pre[0, unsafe] = 1.0
        pre[1, _ONE] = 1.0
        pre[2, contro] = 1.0
        risk = state[f"{path}risk_level_head.weight"]  # rows: Safe, Unsafe, Controversial
        risk[0] = _row(risk.shape[1], one=1.0, unsafe=-3.0, contro=-3.0)
        risk[1] = _row(risk.shape[1], one=-1.0, unsafe=3.0)
        risk[2] = _row(risk.shape[1], one=-1.0, contro=3.0)
        category = state[f"{path}category_head.weight"]
        category[_VIOLENT, 0] = 2.0
        category[_UNETHICAL, 2] = 2.0


def _row(width: int, *, one: float = 0.0, unsafe: float = 0.0, contro: float = 0.0) -> torch.Tensor:
    import torch

    row = torch.zeros(width)
    row[0], row[1], row[2] = unsafe, one, contro
    return row
