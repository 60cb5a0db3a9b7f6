"""The DiaSafety, GPTFuzz, SafeText and Latent Jailbreak answer readers yield well-formed records
with the verified label counts, and answers of one prompt share one group."""

from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path

import pytest

from workers.backends import taxonomy as tx
from workers.guards.datasets.records import text_key
from workers.guards.datasets.registry import DATASETS, dataset_root
from workers.guards.stream_heads import answers_dialogue as ad
from workers.guards.stream_heads.answers import ResponseReader, ResponseRecord

READERS: dict[str, ResponseReader] = {
    "diasafety": ad.read_diasafety,
    "gptfuzz_labeled_responses": ad.read_gptfuzz_labeled_responses,
    "safetext": ad.read_safetext,
    "latent_jailbreak": ad.read_latent_jailbreak,
}

SPLITS: dict[str, tuple[str, ...]] = {
    "diasafety": ("train", "val", "test"),
    "gptfuzz_labeled_responses": ("train", "evaluate"),
    "safetext": ("full",),
    "latent_jailbreak": ("full",),
}

LANGUAGES: dict[str, set[str]] = {
    "diasafety": {"en"},
    "gptfuzz_labeled_responses": {"en", "zh"},
    "safetext": {"en"},
    "latent_jailbreak": {"en", "zh"},
}

# (harmful, not harmful) per split, from each SOURCE.md.
EXPECTED: dict[tuple[str, str], tuple[int, int]] = {
    # train 9,017 rows, 4,178 Unsafe; 2 Safe rows (Risk Ignorance) have a blank response.
    ("diasafety", "train"): (4178, 9017 - 4178 - 2),
    ("diasafety", "val"): (502, 1097 - 502),
    # test 1,095 rows, 501 Unsafe; 1 Safe row (Risk Ignorance) has a blank response.
    ("diasafety", "test"): (501, 1095 - 501 - 1),
    ("gptfuzz_labeled_responses", "train"): (1694, 4466),
    ("gptfuzz_labeled_responses", "evaluate"): (545, 995),
    ("safetext", "full"): (370, 1095),
    ("latent_jailbreak", "full"): (1424, 1456),
}


@pytest.fixture(scope="module")
def root() -> Path:
    return dataset_root()


_CACHE: dict[tuple[str, str], list[ResponseRecord]] = {}


def _read(name: str, split: str, root: Path) -> list[ResponseRecord]:
    if (name, split) not in _CACHE:
        _CACHE[(name, split)] = list(READERS[name](root / name, split, {}))
    return _CACHE[(name, split)]


def _all(name: str, root: Path) -> list[ResponseRecord]:
    return [record for split in SPLITS[name] for record in _read(name, split, root)]


def test_splits_are_the_registry_splits() -> None:
    for name, splits in SPLITS.items():
        assert set(splits) == set(DATASETS[name].splits), name


@pytest.mark.parametrize("name", sorted(READERS))
def test_records_are_well_formed(name: str, root: Path) -> None:
    records = _all(name, root)
    assert records
    for split in SPLITS[name]:
        for record in _read(name, split, root):
            assert record.uid.startswith(f"{name}/{split}/"), record.uid
            assert record.dataset == name
            assert record.split == split
            assert record.prompt.strip(), record.uid
            assert record.prompt == record.prompt.strip(), record.uid
            assert record.response.strip(), record.uid
            assert record.response == record.response.strip(), record.uid
            assert isinstance(record.harmful, bool), record.uid
            assert record.category is None or record.category in tx.QUERY_CATEGORIES, record.uid
            if not record.harmful:
                assert record.category is None, record.uid
            assert record.language in LANGUAGES[name], record.uid
            assert record.group.startswith(f"{name}/"), record.uid
            assert record.source, record.uid
            assert record.harmful_from is None
    assert len({r.uid for r in records}) == len(records)


@pytest.mark.parametrize(("name", "split"), sorted(EXPECTED))
def test_label_counts(name: str, split: str, root: Path) -> None:
    labels = Counter(r.harmful for r in _read(name, split, root))
    assert (labels[True], labels[False]) == EXPECTED[(name, split)]


def test_diasafety_categories(root: Path) -> None:
    assert set(ad.DIASAFETY_CATEGORIES.values()) <= set(tx.QUERY_CATEGORIES)
    categories = Counter(r.category for r in _read("diasafety", "train", root) if r.harmful)
    # Unsafe train rows: Risk Ignorance 753; the other four types 4,178 - 753 (counted in the file).
    assert categories == {tx.SELF_HARM: 753, tx.UNETHICAL: 4178 - 753}


def test_diasafety_groups_follow_the_normalised_context(root: Path) -> None:
    records = _all("diasafety", root)
    keys_per_group: dict[str, set[str]] = defaultdict(set)
    groups_per_key: dict[str, set[str]] = defaultdict(set)
    for record in records:
        keys_per_group[record.group].add(text_key(record.prompt))
        groups_per_key[text_key(record.prompt)].add(record.group)
    assert all(len(keys) == 1 for keys in keys_per_group.values())
    assert all(len(groups) == 1 for groups in groups_per_key.values())
    # 6,512 distinct train contexts normalise to 6,482 keys (counted in the file); one of them
    # appears only in a row with a blank response, which is skipped. Groups span splits.
    assert len({r.group for r in _read("diasafety", "train", root)}) == 6482 - 1
    # Contexts recur across DiaSafety's splits (normalised contexts, counted in the files): the
    # group follows them, so a held-out part can keep a context on one side.
    groups = {split: {r.group for r in _read("diasafety", split, root)} for split in SPLITS["diasafety"]}
    assert len(groups["train"] & groups["val"]) == 440
    assert len(groups["train"] & groups["test"]) == 423
    assert len(groups["val"] & groups["test"]) == 98


def test_gptfuzz_answers_of_one_question_share_a_group(root: Path) -> None:
    for split, questions in (("train", 80), ("evaluate", 20)):
        records = _read("gptfuzz_labeled_responses", split, root)
        prompts_per_group: dict[str, set[str]] = defaultdict(set)
        for record in records:
            prompts_per_group[record.group].add(record.prompt)
        assert len(prompts_per_group) == questions
        assert all(len(prompts) == 1 for prompts in prompts_per_group.values())
        assert len({r.prompt for r in records}) == questions  # one group per question text
        # Every question is answered through each of the 77 templates.
        assert set(Counter(r.group for r in records).values()) == {77}
    train = {r.group for r in _read("gptfuzz_labeled_responses", "train", root)}
    evaluate = {r.group for r in _read("gptfuzz_labeled_responses", "evaluate", root)}
    assert not train & evaluate  # the splits are by question
    # Answers holding Han characters (counted in the files): train 49, evaluate 9.
    languages = Counter((r.split, r.language) for r in _all("gptfuzz_labeled_responses", root))
    assert languages == {
        ("train", "en"): 6160 - 49,
        ("train", "zh"): 49,
        ("evaluate", "en"): 1540 - 9,
        ("evaluate", "zh"): 9,
    }


def test_safetext_advices_of_a_scenario_share_a_group(root: Path) -> None:
    records = _read("safetext", "full", root)
    groups_per_prompt: dict[str, set[str]] = defaultdict(set)
    prompts_per_group: dict[str, set[str]] = defaultdict(set)
    for record in records:
        groups_per_prompt[record.prompt].add(record.group)
        prompts_per_group[record.group].add(record.prompt)
    assert len(groups_per_prompt) == len(prompts_per_group) == 367
    assert all(len(groups) == 1 for groups in groups_per_prompt.values())
    assert all(len(prompts) == 1 for prompts in prompts_per_group.values())
    # Every scenario has safe and unsafe advice.
    assert all(len({r.harmful for r in records if r.group == group}) == 2 for group in prompts_per_group)
    assert {r.category for r in records if r.harmful} == {tx.SELF_HARM}


def test_latent_jailbreak_groups_languages_and_sources(root: Path) -> None:
    records = _read("latent_jailbreak", "full", root)
    prompts_per_group: dict[str, set[str]] = defaultdict(set)
    for record in records:
        prompts_per_group[record.group].add(record.prompt)
    # 2 positions x 16 target groups, each answered 30 times by 3 models.
    assert len(prompts_per_group) == 32
    assert all(len(prompts) == 1 for prompts in prompts_per_group.values())
    assert len({r.prompt for r in records}) == 32
    assert set(Counter(r.group for r in records).values()) == {90}
    # SOURCE.md: 1,677 of 2,880 answers contain Chinese characters.
    assert Counter(r.language for r in records) == {"zh": 1677, "en": 2880 - 1677}
    assert {r.category for r in records if r.harmful} == {tx.UNETHICAL}
    unsafe = Counter(r.source for r in records if r.harmful)
    assert unsafe == {
        "BELLE-7B-2M/P1_prefix": 79,
        "BELLE-7B-2M/P1_suffix": 405,
        "ChatGLM2-6B/P1_prefix": 337,
        "ChatGLM2-6B/P1_suffix": 386,
        "ChatGPT/P1_prefix": 16,
        "ChatGPT/P1_suffix": 201,
    }
