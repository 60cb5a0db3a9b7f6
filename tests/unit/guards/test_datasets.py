"""The loaders read every dataset folder into well-formed records with the documented counts."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from topics.events import Risk
from workers.backends.taxonomy import QUERY_CATEGORIES, canonical_category
from workers.guards.datasets.records import Purpose, text_key
from workers.guards.datasets.registry import DATASETS, dataset_root, load


@pytest.fixture(scope="module")
def root() -> Path:
    return dataset_root()


@pytest.mark.parametrize("name", sorted(name for name, spec in DATASETS.items() if spec.reader is not None))
def test_records_are_well_formed(name: str, root: Path) -> None:
    spec = DATASETS[name]
    for purpose in (Purpose.TRAIN, Purpose.EVAL):
        if not spec.splits_for(purpose):
            continue
        records = load(name, purpose, root)
        assert records, (name, purpose)
        for record in records:
            assert record.dataset == name
            assert record.text.strip(), record.uid
            assert record.category is None or record.category in QUERY_CATEGORIES
            assert record.language in {"en", "zh", "ru"}
            assert spec.splits[record.split] is purpose


# Counts stated in each dataset's SOURCE.md (evaluation splits).
EXPECTED = {
    "xstest": {"safe": 250, "unsafe": 200},
    "openai_moderation": {"safe": 1158, "unsafe": 522},
    "toxic_chat": {"safe": 2853 - 362, "unsafe": 362},
    "simple_safety_tests": {"unsafe": 100},
    "harmbench": {"unsafe": 320},
    "cold_zh": {"safe": 3216, "unsafe": 2107},
    "flames_zh": {"unsafe": 1000},
    "chisafetybench_zh": {"unsafe": 462},
    "ru_distorted_toxicity": {"safe": 2439 - 104, "unsafe": 561},  # 104 blank comments are skipped
    "ru_hatespeech_mera": {"safe": 265, "unsafe": 265},
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_evaluation_counts_match_the_source_notes(name: str, root: Path) -> None:
    labels = Counter(r.label.value for r in load(name, Purpose.EVAL, root))
    assert dict(labels) == EXPECTED[name]


def test_multilabel_and_category_mappings(root: Path) -> None:
    openai = load("openai_moderation", Purpose.EVAL, root)
    assert all((r.category is None) == (r.label is Risk.SAFE) for r in openai)
    xstest = {r.subset: r for r in load("xstest", Purpose.EVAL, root)}
    assert xstest["contrast_privacy"].category == "PII"
    assert xstest["homonyms"].label is Risk.SAFE
    harmbench = load("harmbench", Purpose.EVAL, root)
    assert Counter(r.category for r in harmbench)["Copyright Violation"] == 80
    contextual = next(r for r in harmbench if r.subset == "contextual")
    assert "\n\n" in contextual.text  # context passage + request


def test_training_side_labels(root: Path) -> None:
    xsafety = load("xsafety", Purpose.TRAIN, root)
    by_scenario = {(r.language, r.subset): r.label for r in xsafety}
    assert by_scenario[("ru", "Crimes_And_Illegal_Activities")] is Risk.UNSAFE
    assert by_scenario[("zh", "Mental_Health")] is Risk.SAFE
    assert by_scenario[("en", "Role_Play_Instruction")] is Risk.CONTROVERSIAL
    assert Counter(r.language for r in xsafety) == {"en": 2800, "ru": 2799, "zh": 2800}
    russe = load("russe_detox_2022", Purpose.TRAIN, root)
    assert {r.label for r in russe} == {Risk.SAFE, Risk.UNSAFE}
    groups = Counter(r.split_group for r in russe)
    assert max(groups.values()) <= 4  # a toxic comment and at most three paraphrases
    jailbreaks = load("jailbreakbench_artifacts", Purpose.TRAIN, root)
    assert {r.category for r in jailbreaks if r.subset != "goal"} == {"Jailbreak"}


def test_text_key_normalises_case_space_and_punctuation() -> None:
    assert text_key("  How do I KILL a process?! ") == text_key("how do i kill a process")
    assert text_key("Ｈｅｌｌｏ") == text_key("hello")  # NFKC folds full-width letters
    assert text_key("你好，世界") == "你好 世界"


def test_canonical_category_accepts_checkpoint_spellings() -> None:
    assert canonical_category('"Violent"') == "Violent"
    assert canonical_category("non-violent illegal acts") == "Non-violent Illegal Acts"
    with pytest.raises(KeyError):
        canonical_category("Spam")
