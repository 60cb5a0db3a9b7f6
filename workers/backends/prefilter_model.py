"""The prefilter model: a sentence encoder plus the trained head, scoring prompt texts."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

import numpy as np
import torch

from workers.backends.encoder import DEFAULT_ENCODER, Encoder, EncoderDtype
from workers.backends.prefilter_head import PrefilterHead
from workers.backends.prefilter_meta import ADAPTER_FILE, HEAD_FILE, PrefilterMeta, resolve_model_dir

if TYPE_CHECKING:
    import numpy.typing as npt

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class TextScores:
    """Scores of n texts: risk probabilities ``[n, 3]`` (``RISK_ORDER``) and the top category."""

    risk: npt.NDArray[np.float32]
    category: npt.NDArray[np.int64]
    category_prob: npt.NDArray[np.float32]


def head_probabilities(head: PrefilterHead, embeddings: npt.NDArray[np.float32]) -> TextScores:
    """Run ``head`` on embeddings and turn its logits into probabilities and top categories."""
    with torch.inference_mode():
        risk_logits, category_logits = head(torch.from_numpy(embeddings))
        risk = torch.softmax(risk_logits, dim=-1)
        category_prob, category = torch.softmax(category_logits, dim=-1).max(dim=-1)
    return TextScores(
        risk=risk.numpy().astype(np.float32),
        category=category.numpy().astype(np.int64),
        category_prob=category_prob.numpy().astype(np.float32),
    )


class Prefilter:
    """Scores prompt texts with an encoder and a head trained on that encoder's embeddings."""

    def __init__(self, encoder: Encoder, head: PrefilterHead, meta: PrefilterMeta) -> None:
        self.encoder = encoder
        self.head = head
        self.meta = meta

    @classmethod
    def load(
        cls,
        model: str = "default",
        *,
        encoder: str = DEFAULT_ENCODER,
        device: str = "cpu",
        dtype: EncoderDtype | None = None,
    ) -> Prefilter:
        """Load a head directory (``"default"``: the shipped one) and the encoder it was trained with.

        Args:
            model: ``"default"`` or a directory with ``meta.json`` and ``head.safetensors``.
            encoder: ``"default"`` loads the encoder named in meta.json; anything else (another
                path to the same model, say) is loaded instead and must reproduce the head's probe.
            device: torch device for the encoder.
            dtype: encoder precision; defaults to the one the head was trained with.

        Raises:
            FileNotFoundError: no head at ``model``, or its meta.json names an adapter file that is missing.
            AdapterMismatch: the adapter does not fit the encoder.
            EncoderMismatch: the encoder does not produce the embeddings the head was trained on.
        """
        directory = resolve_model_dir(model)
        meta = PrefilterMeta.read(directory)
        name = meta.encoder if encoder == DEFAULT_ENCODER else encoder
        precision = dtype or cast("EncoderDtype", meta.encoder_dtype)
        sentence_encoder = Encoder(name, device=device, dtype=precision)
        if meta.adapter is not None:
            sentence_encoder.apply_adapter(meta.adapter, directory / ADAPTER_FILE)
        sentence_encoder.check_probe(meta.probe)
        if sentence_encoder.dim != meta.embedding_dim:
            raise ValueError(f"encoder dimension {sentence_encoder.dim} != head input {meta.embedding_dim}")
        # The head is tiny and stays on the CPU whatever device the encoder uses.
        head = PrefilterHead.load(
            directory / HEAD_FILE, dim=meta.embedding_dim, hidden=meta.hidden, categories=len(meta.categories)
        )
        logger.info("prefilter head %s loaded (encoder %s, %s)", directory, name, precision)
        return cls(sentence_encoder, head, meta)

    def score(self, texts: Sequence[str], *, batch_size: int = 16) -> TextScores:
        """Scores of ``texts`` in order."""
        return head_probabilities(self.head, self.encoder.embed(texts, batch_size=batch_size))
