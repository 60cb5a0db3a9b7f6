"""Fine-tuning the prefilter's encoder: adapters merge exactly, bad adapters are refused, the recipe trains and loads."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from workers.backends import prefilter_adapter as adapter
from workers.backends.encoder import Encoder
from workers.backends.prefilter_head import PrefilterHead
from workers.backends.prefilter_meta import ADAPTER_FILE, HEAD_FILE, AdapterSpec, PrefilterMeta
from workers.backends.prefilter_model import Prefilter
from workers.guards import train_prefilter
from workers.guards.datasets.corpus import training_corpus
from workers.guards.datasets.registry import FIRST_BATCH_TRAINING_SETS, dataset_root
from workers.guards.finetune import FineTuneConfig, Targets, fine_tune
from workers.guards.train_prefilter import TrainConfig, train

TEXTS = ["How can I kill a Python process?", "How can I kill my neighbour?", "Как дела?", "如何制造炸弹"]


def _trained_looking(encoder: Encoder, spec: AdapterSpec, seed: int = 0) -> dict[str, torch.Tensor]:
    """Attach an adapter to ``encoder`` with random non-zero factors (as training leaves them); return them."""
    adapted = adapter.attach(encoder.transformer, spec)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in adapted.named_parameters():
            if "lora_" in name:
                parameter.copy_(0.05 * torch.randn(parameter.shape, generator=generator))
    return adapter.factors(adapted)


@pytest.mark.slow
def test_a_merged_adapter_computes_what_the_adapted_encoder_computed(tmp_path: Path) -> None:
    spec = AdapterSpec(rank=4, alpha=8)
    adapted = Encoder(dtype="float32")
    plain = adapted.embed(TEXTS)
    adapter.save(_trained_looking(adapted, spec), tmp_path / ADAPTER_FILE)
    unmerged = adapted.embed(TEXTS)  # still running through the LoRA layers

    served = Encoder(dtype="float32")
    served.apply_adapter(spec, tmp_path / ADAPTER_FILE)
    merged = served.embed(TEXTS)

    np.testing.assert_allclose(merged, unmerged, atol=1e-5)
    assert float(np.abs(merged - plain).max()) > 1e-2  # the adapter changed something
    assert not any("lora" in name for name, _ in served.transformer.named_modules())  # nothing left to run


@pytest.mark.slow
def test_an_adapter_that_does_not_fit_is_refused(tmp_path: Path) -> None:
    encoder = Encoder(dtype="float32")
    adapter.save(_trained_looking(encoder, AdapterSpec(rank=4, alpha=8)), tmp_path / ADAPTER_FILE)
    with pytest.raises(adapter.AdapterMismatch):
        Encoder(dtype="float32").apply_adapter(AdapterSpec(rank=2, alpha=8), tmp_path / ADAPTER_FILE)
    with pytest.raises(adapter.AdapterMismatch, match=r"unexpected|missing"):
        Encoder(dtype="float32").apply_adapter(
            AdapterSpec(rank=4, alpha=8, targets=("query",)), tmp_path / ADAPTER_FILE
        )
    with pytest.raises(FileNotFoundError, match="names an adapter"):
        Encoder(dtype="float32").apply_adapter(AdapterSpec(rank=4, alpha=8), tmp_path / "absent.safetensors")


def test_fine_tuning_refuses_an_encoder_in_bfloat16() -> None:
    class Bfloat16Encoder:
        dtype = "bfloat16"

    targets = Targets(torch.zeros(1, dtype=torch.long), torch.zeros(1, dtype=torch.long), torch.ones(1))
    with pytest.raises(ValueError, match="float32"):
        fine_tune(
            Bfloat16Encoder(),  # type: ignore[arg-type]
            ["x"],
            targets,
            FineTuneConfig(),
            head=PrefilterHead(384, 8, 9),
            category_weight=0.5,
            seed=0,
        )


@pytest.mark.slow
def test_the_fine_tuning_recipe_trains_writes_and_loads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    corpus = training_corpus(dataset_root(), FIRST_BATCH_TRAINING_SETS)
    monkeypatch.setattr(train_prefilter, "training_corpus", lambda root, names: corpus)
    out = tmp_path / "head"
    config = TrainConfig(
        out=out,
        subset=120,
        encoder_dtype="float32",
        fine_tune=FineTuneConfig(rank=4, alpha=8, epochs=2, max_tokens=32),
        progress=False,
    )
    meta = train(config)

    assert meta.adapter == AdapterSpec(rank=4, alpha=8)
    assert meta.training["command"].endswith(
        "--encoder-dtype float32 --adapter-rank 4 --adapter-epochs 2 --adapter-max-tokens 32"
    )
    assert meta.training["hyperparameters"]["fine_tune"]["rank"] == 4
    factors = load_file(str(out / ADAPTER_FILE))
    assert any("lora_B" in name and float(t.abs().max()) > 0 for name, t in factors.items())  # B starts at 0

    # Loading merges the adapter before the probe check: a head fine-tuned with it loads and scores.
    loaded = Prefilter.load(str(out), dtype="float32")
    assert PrefilterMeta.read(out).adapter == meta.adapter
    scores = loaded.score(TEXTS)
    np.testing.assert_allclose(scores.risk.sum(axis=1), 1.0, rtol=1e-5)
    plain = Encoder(dtype="float32").embed(TEXTS)
    assert float(np.abs(loaded.encoder.embed(TEXTS) - plain).max()) > 1e-4

    # The frozen recipe into the same directory leaves no adapter behind to be merged by mistake.
    train(TrainConfig(out=out, subset=120, encoder_dtype="float32", epochs=2, progress=False))
    assert not (out / ADAPTER_FILE).exists() and (out / HEAD_FILE).is_file()
    assert PrefilterMeta.read(out).adapter is None
