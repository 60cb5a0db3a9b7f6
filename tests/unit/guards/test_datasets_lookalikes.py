"""The over-refusal / contrast readers yield well-formed records with the documented label counts."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from topics.events import Risk
from workers.backends.taxonomy import JAILBREAK
from workers.guards.datasets import lookalikes_en
from workers.guards.datasets.records import Record
from workers.guards.datasets.registry import dataset_root

from .checks import assert_prompt_records

Reader = Callable[[Path, str], Iterator[Record]]

READERS: dict[str, Reader] = {
    "phtest": lookalikes_en.read_phtest,
    "coconot": lookalikes_en.read_coconot,
    "oktest": lookalikes_en.read_oktest,
    "wildjailbreak_eval": lookalikes_en.read_wildjailbreak_eval,
    "orbench_80k_subset": lookalikes_en.read_orbench_80k_subset,
    "orfuzz": lookalikes_en.read_orfuzz,
}

# Label counts, from each dataset's SOURCE.md unless the comment says otherwise.
EXPECTED: dict[str, dict[str, int]] = {
    # harmless 2,069 / controversial 1,191; one exact repeat of each is skipped (verified in the file).
    "phtest": {"safe": 2069 - 1, "controversial": 1191 - 1},
    # contrast 379 safe; original 1,000 = 394 safety concerns (unsafe) + 606 non-safety (safe), less
    # one safety row whose cell is a lost "#NAME?"; pref 927 rows of which 919 distinct prompts
    # (distinct count verified in the file).
    "coconot": {"safe": 379 + 606 + 919, "unsafe": 394 - 1},
    "oktest": {"safe": 300 + 50},
    "wildjailbreak_eval": {"safe": 210, "unsafe": 1989},
    "orbench_80k_subset": {"safe": 5 * 200},
    # ORFuzz.csv 1,855 safe; user_study COR 210 + OR-Bench-Hard-1K 134 safe, OR-Bench-Toxic 66 +
    # AdvBench 54 unsafe.
    "orfuzz": {"safe": 1855 + 210 + 134, "unsafe": 66 + 54},
}


@pytest.fixture(scope="module")
def root() -> Path:
    return dataset_root()


def _read(name: str, root: Path) -> list[Record]:
    return list(READERS[name](root / name, "full"))


@pytest.mark.parametrize("name", sorted(READERS))
def test_records_are_well_formed(name: str, root: Path) -> None:
    assert_prompt_records(_read(name, root), name, {"en"})


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_label_counts_match_the_source_notes(name: str, root: Path) -> None:
    labels = Counter(r.label.value for r in _read(name, root))
    assert dict(labels) == EXPECTED[name]


@pytest.mark.parametrize("name", sorted(READERS))
def test_no_prompt_repeats_within_a_file(name: str, root: Path) -> None:
    # The file is the uid part before the row key (e.g. coconot/full/<part>/<id>).
    per_file = Counter((r.uid.rsplit("/", 1)[0], r.text) for r in _read(name, root))
    assert max(per_file.values()) == 1


def test_coconot_only_safety_concerns_are_unsafe(root: Path) -> None:
    records = _read("coconot", root)
    unsafe = [r for r in records if r.label is Risk.UNSAFE]
    assert all(r.uid.startswith("coconot/full/original/") for r in unsafe)
    assert Counter(r.category for r in unsafe) == {
        "PII": 88,
        "Unethical Acts": 91 + 29,  # misinformation + triggers for offensive language
        "Copyright Violation": 33,
        None: 82 + 69,  # dangerous or sensitive topics + wildchats (one lost cell skipped)
        JAILBREAK: 1,
    }
    contrast = {r.label for r in records if r.subset.startswith(("contrast/", "pref/"))}
    assert contrast == {Risk.SAFE}
    original_safe = Counter(r.subset for r in records if r.subset.startswith("original/") and r.label is Risk.SAFE)
    assert sum(original_safe.values()) == 606
    assert original_safe["original/subjective questions"] == 75


def test_wildjailbreak_harmful_prompts_are_jailbreaks(root: Path) -> None:
    records = _read("wildjailbreak_eval", root)
    assert {(r.subset, r.label, r.category) for r in records} == {
        ("adversarial_harmful", Risk.UNSAFE, JAILBREAK),
        ("adversarial_benign", Risk.SAFE, None),
    }


def test_orbench_subsets_are_its_categories(root: Path) -> None:
    subsets = Counter(r.subset for r in _read("orbench_80k_subset", root))
    assert subsets == dict.fromkeys(("harmful", "illegal", "sexual", "unethical", "violence"), 200)


def test_orfuzz_sources_and_groups(root: Path) -> None:
    records = _read("orfuzz", root)
    by_subset = Counter((r.subset, r.label) for r in records)
    assert by_subset == {
        ("ORFuzz", Risk.SAFE): 1855,
        ("user_study/COR", Risk.SAFE): 210,
        ("user_study/eval-or-bench-hard-1k", Risk.SAFE): 134,
        ("user_study/eval-or-bench-toxic", Risk.UNSAFE): 66,
        ("user_study/eval-advbench", Risk.UNSAFE): 54,
    }
    groups = Counter(r.group for r in records if r.group)
    assert max(groups.values()) > 1  # wrappers of one sentence share a group
    assert max(groups.values()) <= 10
