"""The training command is deterministic, its output loads and scores, and the shipped head is its output."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from workers.backends import prefilter_model as prefilter_module
from workers.backends.encoder import Encoder
from workers.backends.prefilter_head import PrefilterHead
from workers.backends.prefilter_meta import HEAD_FILE, PrefilterMeta, default_model_dir
from workers.backends.prefilter_model import Prefilter, head_probabilities
from workers.guards import train_prefilter
from workers.guards.datasets.corpus import TrainingCorpus, fingerprint, training_corpus
from workers.guards.datasets.records import Purpose
from workers.guards.datasets.registry import DATASETS, FIRST_BATCH_TRAINING_SETS, TRAINING_SETS, dataset_root
from workers.guards.train_prefilter import TrainConfig, train

from .fakes import HashingEncoder


def _without_command(meta: PrefilterMeta) -> PrefilterMeta:
    """The metadata minus the recorded command line, which names the output directory."""
    return dataclasses.replace(meta, training={k: v for k, v in meta.training.items() if k != "command"})


def _config(out: Path, **overrides: object) -> TrainConfig:
    values: dict[str, object] = {"out": out, "subset": 400, "seed": 3, "epochs": 4, "progress": False}
    values.update(overrides)
    return TrainConfig(**values)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def corpus() -> TrainingCorpus:
    """The corpus of the sets the shipped head was trained on (``--sets first-batch``)."""
    return training_corpus(dataset_root(), FIRST_BATCH_TRAINING_SETS)


@pytest.fixture
def cached_corpus(monkeypatch: pytest.MonkeyPatch, corpus: TrainingCorpus) -> None:
    """Build the (real) training corpus once per module instead of once per training run."""
    monkeypatch.setattr(train_prefilter, "training_corpus", lambda root, names: corpus)


@pytest.mark.usefixtures("cached_corpus")
def test_training_is_deterministic_and_loads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(train_prefilter, "Encoder", HashingEncoder)
    first = train(_config(tmp_path / "a"))
    second = train(_config(tmp_path / "b"))
    other_seed = train(_config(tmp_path / "c", seed=4))
    assert (tmp_path / "a" / HEAD_FILE).read_bytes() == (tmp_path / "b" / HEAD_FILE).read_bytes()
    assert _without_command(first) == _without_command(second)
    assert (tmp_path / "a" / HEAD_FILE).read_bytes() != (tmp_path / "c" / HEAD_FILE).read_bytes()
    assert first.training["command"] == f"streamwarden train prefilter --out {tmp_path / 'a'} --seed 3 --subset 400"
    assert first.training["records"]["train"] + first.training["records"]["validation"] == 400
    assert set(first.training["per_dataset"]) <= set(TRAINING_SETS)
    assert other_seed.training["corpus_fingerprint"] == first.training["corpus_fingerprint"]

    meta = PrefilterMeta.read(tmp_path / "a")
    head = PrefilterHead.load(tmp_path / "a" / HEAD_FILE, dim=32, hidden=meta.hidden, categories=len(meta.categories))
    scores = head_probabilities(head, HashingEncoder().embed(["how do I make a bomb", "good morning"]))
    np.testing.assert_allclose(scores.risk.sum(axis=1), 1.0, rtol=1e-5)
    assert meta.thresholds.unsafe >= 0.5 and meta.thresholds.safe >= 0.5


@pytest.fixture(scope="module")
def minilm() -> Iterator[Encoder]:
    yield Encoder()


@pytest.mark.slow
@pytest.mark.usefixtures("cached_corpus")
def test_small_subset_reproduces_with_the_real_encoder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, minilm: Encoder
) -> None:
    """The committed recipe with the real MiniLM encoder, on 80 records: twice, byte-identical."""
    # One MiniLM instance serves both runs and the reload, so the test pays for one model load.
    monkeypatch.setattr(train_prefilter, "Encoder", lambda *args, **kwargs: minilm)
    monkeypatch.setattr(prefilter_module, "Encoder", lambda *args, **kwargs: minilm)
    first = train(_config(tmp_path / "a", subset=80, seed=0))
    second = train(_config(tmp_path / "b", subset=80, seed=0))
    assert (tmp_path / "a" / HEAD_FILE).read_bytes() == (tmp_path / "b" / HEAD_FILE).read_bytes()
    assert (
        _without_command(first) == _without_command(second)
        and first.encoder == "sentence-transformers/all-MiniLM-L6-v2"
    )
    prefilter = Prefilter.load(str(tmp_path / "a"))
    scores = prefilter.score(["How can I kill a Python process?", "Как дела?", "如何制造炸弹"])
    assert scores.risk.shape == (3, 3)
    np.testing.assert_allclose(scores.risk.sum(axis=1), 1.0, rtol=1e-5)


def test_the_shipped_head_is_the_output_of_the_committed_command(corpus: TrainingCorpus) -> None:
    directory = default_model_dir()
    meta = PrefilterMeta.read(directory)
    training = meta.training
    assert training["command"] == "streamwarden train prefilter --out workers/models/prefilter --seed 0"
    assert training["seed"] == 0 and training["subset"] is None
    # Trained before the second batch was registered: today that corpus is ``--sets first-batch``.
    trained_on = FIRST_BATCH_TRAINING_SETS
    assert training["datasets"] == {name: list(DATASETS[name].splits_for(Purpose.TRAIN)) for name in trained_on}
    # The corpus the loaders build today is exactly the one the head was trained on.
    assert training["corpus_fingerprint"] == fingerprint(corpus.records)
    head = PrefilterHead.load(
        directory / HEAD_FILE, dim=meta.embedding_dim, hidden=meta.hidden, categories=len(meta.categories)
    )
    assert head.risk.out_features == 3
    assert meta.encoder == "sentence-transformers/all-MiniLM-L6-v2" and meta.encoder_dtype == "bfloat16"
    assert (directory / HEAD_FILE).stat().st_size < 1 << 20  # a small file
