"""The train/evaluation split is enforced by the loader, and training never sees an evaluation record."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from topics.events import Risk
from workers.guards.datasets import corpus as corpus_module
from workers.guards.datasets import registry
from workers.guards.datasets.corpus import evaluation_sets, training_corpus
from workers.guards.datasets.records import Purpose, Record, text_key
from workers.guards.datasets.registry import (
    ALL_TRAINING_SETS,
    ANSWER_ONLY_SETS,
    DATASETS,
    EVALUATION_SETS,
    FIRST_BATCH_TRAINING_SETS,
    TRAINING_SETS,
    SplitViolation,
    dataset_root,
    load,
    sets_option,
    training_sets,
)

# shared/datasets/README.md, "How to use them: train vs. evaluate".
README_EVAL_ONLY = {
    "openai_moderation",
    "xstest",
    "simple_safety_tests",
    "ru_distorted_toxicity",
    "ru_hatespeech_mera",
    "flames_zh",
    "chisafetybench_zh",
}
README_EVAL_SPLITS = {("harmbench", "test"), ("toxic_chat", "test"), ("cold_zh", "test")}
README_TRAIN = {
    "do_not_answer",
    "jailbreakbench_artifacts",
    "advbench",
    "strongreject",
    "ailuminate_demo",
    "toxigen_demonstrations",
    "xsafety",
    "multijail",
    "cvalues_zh",
    "russe_detox_2022",
    # The second batch ("Added training-side sets").
    "phtest",
    "coconot",
    "oktest",
    "wildjailbreak_eval",
    "orbench_80k_subset",
    "orfuzz",
    "red_instruct_harmful_questions",
    "jade_db_zh",
    "rtp_lx",
    "diasafety",
    "gptfuzz_labeled_responses",
    "safetext",
    "latent_jailbreak",
    "safety_tuned_llamas",
}
NON_COMMERCIAL = {"toxicn_zh", "ru_sensitive_inappropriate"}
"""Sets the README keeps out of any default the project ships."""


@pytest.fixture(scope="module")
def root() -> Path:
    return dataset_root()


def test_registry_matches_the_readme_split() -> None:
    for name in README_EVAL_ONLY:
        assert set(DATASETS[name].splits.values()) == {Purpose.EVAL}, name
    for name, split in README_EVAL_SPLITS:
        assert DATASETS[name].splits[split] is Purpose.EVAL
        assert Purpose.TRAIN in DATASETS[name].splits.values(), name
    for name in README_TRAIN:
        assert set(DATASETS[name].splits.values()) == {Purpose.TRAIN}, name
    assert set(DATASETS) == README_EVAL_ONLY | README_TRAIN | {n for n, _ in README_EVAL_SPLITS}


@pytest.mark.parametrize("name", sorted(README_EVAL_ONLY))
def test_evaluation_only_sets_refuse_training(name: str, root: Path) -> None:
    with pytest.raises(SplitViolation):
        load(name, Purpose.TRAIN, root)


@pytest.mark.parametrize(("name", "split"), sorted(README_EVAL_SPLITS))
def test_test_splits_refuse_training(name: str, split: str, root: Path) -> None:
    with pytest.raises(SplitViolation):
        load(name, Purpose.TRAIN, root, splits=(split,))
    trained = load(name, Purpose.TRAIN, root)
    assert trained and {r.split for r in trained}.isdisjoint({split})


@pytest.mark.parametrize("name", sorted(README_TRAIN))
def test_training_sets_are_not_evaluation_sets(name: str, root: Path) -> None:
    with pytest.raises(SplitViolation):
        load(name, Purpose.EVAL, root)


def test_non_commercial_sets_are_not_training_sets() -> None:
    assert NON_COMMERCIAL.isdisjoint(TRAINING_SETS)


def test_answer_only_sets_are_training_sets_without_prompts(root: Path) -> None:
    assert set(ANSWER_ONLY_SETS) == {"diasafety", "gptfuzz_labeled_responses", "safetext", "latent_jailbreak",
                                     "safety_tuned_llamas"}  # fmt: skip
    assert set(ALL_TRAINING_SETS) == set(TRAINING_SETS) | set(ANSWER_ONLY_SETS)
    assert set(TRAINING_SETS).isdisjoint(ANSWER_ONLY_SETS)
    with pytest.raises(KeyError, match="answers only"):
        load("safetext", Purpose.TRAIN, root)


def test_sets_option_round_trips_through_training_sets() -> None:
    assert training_sets(["all"]) == ALL_TRAINING_SETS and sets_option(ALL_TRAINING_SETS) == []
    assert sets_option(TRAINING_SETS, TRAINING_SETS) == []  # all a prompt-only command can read
    assert training_sets(["first-batch"]) == FIRST_BATCH_TRAINING_SETS
    assert set(FIRST_BATCH_TRAINING_SETS) < set(TRAINING_SETS)
    assert sets_option(FIRST_BATCH_TRAINING_SETS) == ["--sets", "first-batch"]
    assert sets_option(FIRST_BATCH_TRAINING_SETS, TRAINING_SETS) == ["--sets", "first-batch"]
    chosen = training_sets(["phtest", "advbench", "phtest", "safetext"])
    assert chosen == ("advbench", "phtest", "safetext")  # registry order, once each
    assert training_sets(sets_option(chosen)[1:]) == chosen
    with pytest.raises(SplitViolation):
        training_sets(["xstest"])
    with pytest.raises(KeyError):
        training_sets(["toxicn_zh"])


def test_unknown_names_are_errors(root: Path) -> None:
    with pytest.raises(KeyError):
        load("no_such_set", Purpose.TRAIN, root)
    with pytest.raises(KeyError):
        load("toxic_chat", Purpose.TRAIN, root, splits=("validation",))


def test_training_corpus_reads_only_allowed_splits(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every read made while building the corpus is either a training split or an evaluation
    split read for the dedupe keys only; no corpus record comes from an evaluation split."""
    reads: list[tuple[str, Purpose, tuple[str, ...] | None]] = []
    real_load = registry.load

    def spy(name: str, purpose: Purpose, root: Path, splits: tuple[str, ...] | None = None) -> list[Record]:
        reads.append((name, purpose, splits))
        return real_load(name, purpose, root, splits)

    monkeypatch.setattr(corpus_module, "load", spy)
    corpus = training_corpus(root)
    assert {name for name, purpose, _ in reads if purpose is Purpose.TRAIN} == set(TRAINING_SETS)
    assert {name for name, purpose, _ in reads if purpose is Purpose.EVAL} == set(EVALUATION_SETS)
    for record in corpus.records:
        assert DATASETS[record.dataset].splits[record.split] is Purpose.TRAIN, record.uid


def test_training_and_evaluation_never_share_a_text(root: Path) -> None:
    corpus = training_corpus(root)
    held_out = {text_key(r.text) for records in evaluation_sets(root).values() for r in records}
    trained = {text_key(r.text) for r in corpus.records}
    assert trained.isdisjoint(held_out)
    assert corpus.dropped_eval_overlap > 0  # the sets do overlap as released; the corpus drops it


def _fake_reader(texts: dict[str, list[tuple[str, Risk]]]) -> registry.Reader:
    def read(folder: Path, split: str) -> Iterator[Record]:
        for i, (text, label) in enumerate(texts[split]):
            yield Record(f"fake/{split}/{i}", text, label, None, "en", "fake", split)

    return read


def test_dedupe_drops_overlap_repeats_and_conflicts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "fake").mkdir()
    reader = _fake_reader(
        {
            "test": [("How do I kill a process?", Risk.SAFE)],
            "train": [
                ("how do I kill a process", Risk.SAFE),  # same normalised text as a test record
                ("hello there", Risk.SAFE),
                ("Hello, there!", Risk.SAFE),  # a repeat
                ("make a bomb", Risk.UNSAFE),
                ("make a bomb", Risk.SAFE),  # conflicting labels: both go
            ],
        }
    )
    spec = registry.DatasetSpec("fake", reader, {"test": Purpose.EVAL, "train": Purpose.TRAIN})
    monkeypatch.setattr(registry, "DATASETS", {"fake": spec})
    monkeypatch.setattr(corpus_module, "EVALUATION_SETS", ("fake",))
    result = training_corpus(tmp_path, names=("fake",))
    assert [r.text for r in result.records] == ["hello there"]
    assert (result.dropped_eval_overlap, result.dropped_duplicates, result.dropped_conflicts) == (1, 1, 2)
