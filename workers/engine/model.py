"""The guard model: a transformers decoder backbone plus the response and query heads.

Module names equal checkpoint tensor names, so ``GuardModel.state_dict()`` is the checkpoint's
tensor set: ``model.*`` (the backbone, built by ``AutoModel.from_config`` from ``model_type``; no
remote code) and, per path (``""`` response, ``"query_"`` query), ``risk_level_category_pre``
(Linear hidden -> inner, no bias), ``risk_level_category_layernorm`` (RMSNorm), ``risk_level_head``
and ``category_head`` (Linear, no bias). A head reads the backbone's last hidden state (after its
final norm) at one position, so position i's scores depend only on tokens 0..i.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from workers.engine.attention import register_attention
from workers.engine.checkpoint import Checkpoint, CheckpointError
from workers.engine.labels import HeadLabels, LabelMaps
from workers.engine.scores import Head, HeadScores

if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any

    from transformers import PretrainedConfig

logger = logging.getLogger(__name__)


class RMSNorm(nn.Module):
    """Qwen3-style RMSNorm: normalise in float32, cast back, then scale."""

    def __init__(self, size: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size))
        self.eps = eps

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        dtype = hidden.dtype
        as_float = hidden.to(torch.float32)
        as_float = as_float * torch.rsqrt(as_float.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * as_float.to(dtype)


class GuardModel(nn.Module):
    """Backbone (``self.model``) plus both head paths, named as in the checkpoint."""

    def __init__(self, backbone_config: PretrainedConfig, guard: Mapping[str, Any], labels: LabelMaps) -> None:
        super().__init__()
        from transformers import AutoModel

        self.labels = labels
        self.model = AutoModel.from_config(  # type: ignore[no-untyped-call]
            backbone_config, attn_implementation=register_attention()
        )
        hidden = int(backbone_config.hidden_size)
        inner = int(guard["guard_inner_size"])
        eps = float(getattr(backbone_config, "rms_norm_eps", 1e-6))
        self.risk_level_category_pre = nn.Linear(hidden, inner, bias=False)
        self.risk_level_category_layernorm = RMSNorm(inner, eps)
        self.risk_level_head = nn.Linear(inner, int(guard["num_risk_level"]), bias=False)
        self.category_head = nn.Linear(inner, int(guard["num_category"]), bias=False)
        self.query_risk_level_category_pre = nn.Linear(hidden, inner, bias=False)
        self.query_risk_level_category_layernorm = RMSNorm(inner, eps)
        self.query_risk_level_head = nn.Linear(inner, int(guard["num_query_risk_level"]), bias=False)
        self.query_category_head = nn.Linear(inner, int(guard["num_query_category"]), bias=False)
        self._permutations = {
            Head.RESPONSE: list(labels.response.risk_permutation),
            Head.QUERY: list(labels.query.risk_permutation),
        }

    @property
    def backbone_config(self) -> PretrainedConfig:
        config: PretrainedConfig = self.model.config
        return config

    def head_labels(self, head: Head) -> HeadLabels:
        return self.labels.response if head is Head.RESPONSE else self.labels.query

    def head_logits(self, head: Head, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Risk logits (checkpoint order) and category logits of ``hidden`` (``[n, hidden_size]``)."""
        if head is Head.RESPONSE:
            inner = self.risk_level_category_layernorm(self.risk_level_category_pre(hidden))
            return self.risk_level_head(inner), self.category_head(inner)
        inner = self.query_risk_level_category_layernorm(self.query_risk_level_category_pre(hidden))
        return self.query_risk_level_head(inner), self.query_category_head(inner)

    def head_outputs(self, head: Head, hidden: torch.Tensor) -> dict[str, torch.Tensor]:
        """Canonical-order logits and probabilities on the device; ``to_scores`` moves them to numpy."""
        risk_logits, category_logits = self.head_logits(head, hidden)
        risk_logits = risk_logits.float()[:, self._permutations[head]]
        category_logits = category_logits.float()
        category_prob, category = category_logits.softmax(-1).max(-1)
        return {
            "risk": risk_logits.softmax(-1),
            "risk_logits": risk_logits,
            "category": category,
            "category_prob": category_prob,
            "category_logits": category_logits,
        }

    @staticmethod
    def to_scores(outputs: Mapping[str, torch.Tensor], start: int = 0, stop: int | None = None) -> HeadScores:
        """Rows ``start .. stop`` of ``head_outputs`` (already on the CPU) as ``HeadScores``."""
        part = {name: tensor[start:stop].numpy() for name, tensor in outputs.items()}
        return HeadScores(
            risk=part["risk"].astype(np.float32, copy=False),
            risk_logits=part["risk_logits"].astype(np.float32, copy=False),
            category=part["category"].astype(np.int64, copy=False),
            category_prob=part["category_prob"].astype(np.float32, copy=False),
            category_logits=part["category_logits"].astype(np.float32, copy=False),
        )

    def expected_shapes(self) -> dict[str, tuple[int, ...]]:
        """Every tensor name this model loads and its shape (persistent parameters and buffers)."""
        return {name: tuple(tensor.shape) for name, tensor in self.state_dict().items()}


def build_guard_model(
    backbone_config: PretrainedConfig,
    guard: Mapping[str, Any],
    labels: LabelMaps,
    *,
    device: torch.device,
    dtype: torch.dtype,
) -> GuardModel:
    """Allocate a ``GuardModel`` on ``device`` in ``dtype`` without initialising its parameters.

    Callers load a checkpoint into it or call ``init_random_weights``.
    """
    with torch.device("meta"):
        model = GuardModel(backbone_config, guard, labels)
    model = model.to(dtype).to_empty(device=device)
    return _recompute_buffers(model, device)


def _recompute_buffers(model: GuardModel, device: torch.device) -> GuardModel:
    """Compute the non-persistent buffers (rotary frequencies, float32) that checkpoints lack."""
    rotary = getattr(model.model, "rotary_emb", None)
    if rotary is not None:
        with torch.device(device):
            model.model.rotary_emb = type(rotary)(config=model.model.config)
    persistent = set(model.state_dict())
    unknown = [name for name, _ in model.named_buffers() if name not in persistent and "rotary_emb" not in name]
    if unknown:
        raise NotImplementedError(f"cannot initialise non-persistent buffer {unknown[0]} of this backbone")
    return model.eval()


@torch.no_grad()
def init_random_weights(model: GuardModel, *, seed: int) -> None:
    """Random weights for tests and benchmarks: scale-preserving, so attention matters.

    Linear matrices ~ N(0, 1/fan_in) and embeddings ~ N(0, 1) keep every residual update of order
    one, so a wrong mask, position or cache shows up in the outputs; norm scales are 1, biases 0.
    """
    device = next(model.parameters()).device
    generator = torch.Generator(device=device).manual_seed(seed)
    for name, parameter in model.named_parameters():
        if parameter.ndim >= 2:
            std = 1.0 if "embed" in name else parameter.shape[-1] ** -0.5
            values = torch.randn(parameter.shape, generator=generator, device=device, dtype=torch.float32)
            parameter.copy_((values * std).to(parameter.dtype))
        elif name.endswith("bias"):
            parameter.zero_()
        else:
            parameter.fill_(1.0)


def validate_checkpoint(checkpoint: Checkpoint) -> dict[str, tuple[int, ...]]:
    """Check every stored tensor against the model its config describes, without loading weights.

    Returns the expected tensor names and shapes.

    Raises:
        CheckpointError: the backbone cannot be built from the config, or a tensor is missing,
            unexpected or has the wrong shape.
    """
    config = checkpoint.config
    backbone_config = config.backbone_config()
    try:
        with torch.device("meta"):
            skeleton = GuardModel(backbone_config, config.raw, config.labels)
    except (KeyError, ValueError, TypeError) as exc:
        raise CheckpointError(
            checkpoint.path, f"cannot build the {config.model_type} backbone from config: {exc!r}"
        ) from exc
    expected = skeleton.expected_shapes()
    checkpoint.check_tensors(expected)
    return expected


def load_guard_model(checkpoint: Checkpoint, *, device: torch.device, dtype: torch.dtype) -> GuardModel:
    """Load a validated checkpoint: build the model from config, check every tensor, then load it.

    Raises:
        CheckpointError: see ``validate_checkpoint``.
    """
    config = checkpoint.config
    expected = validate_checkpoint(checkpoint)
    backbone_config = config.backbone_config()
    with torch.device("meta"):
        model = GuardModel(backbone_config, config.raw, config.labels).to(dtype)
    # Loaded tensors replace the meta parameters: the weights exist once on the device.
    model.load_state_dict(checkpoint.load_tensors(list(expected), device, dtype), strict=True, assign=True)
    model = _recompute_buffers(model, device)
    left = [name for name, tensor in [*model.named_parameters(), *model.named_buffers()] if tensor.is_meta]
    if left:
        raise CheckpointError(checkpoint.path, f"tensor {left[0]} was not loaded")
    logger.info(
        "loaded %s (%s, %d layers) on %s as %s",
        checkpoint.model_id,
        config.model_type,
        backbone_config.num_hidden_layers,
        device,
        dtype,
    )
    return model
