"""LoRA adapters on the prefilter's sentence encoder: attached for training, merged for serving.

A frozen encoder plus a head cannot separate a benign look-alike ("kill a Python process") from
the request it resembles: both land close together in the embedding space. Fine-tuning the
encoder moves them apart, and low-rank adapters (peft's LoRA) keep what ships small: the packaged
MiniLM stays as it is, and ``adapter.safetensors`` holds only the low-rank factors (2.6 MB at rank
16 on every linear layer of MiniLM's six blocks).

On load the factors are merged into the encoder's weights (``W + alpha / rank * B A``), so an
adapted encoder costs exactly what the plain one costs per prompt.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors.torch import load_file, save_file

from workers.backends.prefilter_meta import AdapterSpec

if TYPE_CHECKING:
    from peft import PeftModel
    from torch import nn


class AdapterMismatch(ValueError):
    """An adapter file does not fit the encoder it is applied to."""


def attach(model: nn.Module, spec: AdapterSpec, *, dropout: float = 0.0) -> PeftModel:
    """Wrap ``model`` with fresh LoRA layers (B = 0, so it still computes what it did); only they train.

    The wrapped modules are replaced in place: ``model`` itself now runs through the adapters.
    """
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=spec.rank, lora_alpha=spec.alpha, target_modules=list(spec.targets), lora_dropout=dropout)
    return get_peft_model(model, config)


def factors(adapted: PeftModel) -> dict[str, torch.Tensor]:
    """The adapter's low-rank factors by name, copied as contiguous float32 (what ``save`` writes)."""
    from peft import get_peft_model_state_dict

    state: dict[str, torch.Tensor] = get_peft_model_state_dict(adapted)
    return {name: tensor.detach().float().contiguous().clone() for name, tensor in state.items()}


def save(tensors: dict[str, torch.Tensor], path: Path) -> None:
    """Write factors taken by ``factors`` (their bytes depend on the weights only)."""
    save_file(tensors, str(path))


def merge(adapted: PeftModel) -> nn.Module:
    """Fold the factors into the wrapped weights and return the plain model (in place)."""
    merged: nn.Module = adapted.merge_and_unload()
    return merged


def apply(model: nn.Module, spec: AdapterSpec, path: Path) -> nn.Module:
    """``model`` with the adapter at ``path`` merged into its weights.

    Raises:
        FileNotFoundError: no adapter file at ``path``.
        AdapterMismatch: the file's tensors do not match ``spec`` on this model (missing, extra or
            differently shaped factors).
    """
    from peft import set_peft_model_state_dict

    if not path.is_file():
        raise FileNotFoundError(f"the head's meta.json names an adapter, but {path} does not exist")
    adapted = attach(model, spec)
    dtype = next(model.parameters()).dtype
    tensors = {name: tensor.to(dtype) for name, tensor in load_file(str(path)).items()}
    try:
        result: Any = set_peft_model_state_dict(adapted, tensors)  # torch's _IncompatibleKeys
    except RuntimeError as exc:  # a shape mismatch
        raise AdapterMismatch(f"{path}: {exc}") from exc
    missing = [key for key in result.missing_keys if "lora_" in key]
    if result.unexpected_keys or missing:
        raise AdapterMismatch(
            f"{path} does not fit this encoder: unexpected {sorted(result.unexpected_keys)[:3]}, "
            f"missing {sorted(missing)[:3]}"
        )
    with torch.no_grad():
        return merge(adapted)
