"""Dynamic int8 quantisation of the backbone for CPU serving (``engine.quantize: int8``).

Every ``nn.Linear`` of the backbone (attention projections and MLP) is replaced by torch's dynamic
int8 linear: weights stored as int8 with a per-tensor scale, activations quantised per forward. On
a small CPU that reads a quarter of the weight bytes per forward and runs the matmuls in int8,
which is where the time goes for the small batches of streaming moderation
(``docs/benchmarks.md``). The heads, the embeddings and the norms stay float32. Scores change
within the bound that ``tests/unit/engine/test_quantize.py`` checks against float32; the verdicts
a quantised guard gives are measured on their own (``docs/quality.md``).
"""

from __future__ import annotations

import logging
from typing import Literal

import torch
from torch import nn

from workers.engine.model import GuardModel

logger = logging.getLogger(__name__)

Quantize = Literal["none", "int8"]


def quantize_backbone(model: GuardModel, mode: Quantize) -> GuardModel:
    """``model`` with its backbone quantised as ``mode`` says (``none`` returns it unchanged).

    Raises:
        ValueError: int8 on a device other than the CPU (torch's dynamic int8 kernels are CPU
            kernels), or a backbone that is not float32.
    """
    if mode == "none":
        return model
    parameter = next(model.parameters())
    if parameter.device.type != "cpu":
        raise ValueError(f"engine.quantize=int8 runs on the CPU only, not on {parameter.device}")
    if parameter.dtype != torch.float32:
        raise ValueError(f"engine.quantize=int8 quantises a float32 backbone, not {parameter.dtype}")
    from torch.ao.quantization import quantize_dynamic

    model.model = quantize_dynamic(model.model, {nn.Linear}, dtype=torch.qint8)  # type: ignore[no-untyped-call]
    logger.info("backbone linear layers quantised to int8 (dynamic)")
    return model
