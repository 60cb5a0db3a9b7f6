"""The Red-Instruct, JADE-DB and RTP-LX prompt readers yield well-formed records with the verified
label counts."""

from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Callable, Iterator
from fractions import Fraction
from pathlib import Path

import pytest

from topics.events import Risk
from workers.backends.taxonomy import SELF_HARM
from workers.guards.datasets import added_prompts
from workers.guards.datasets.files import json_lines
from workers.guards.datasets.records import Record
from workers.guards.datasets.registry import dataset_root

from .checks import assert_prompt_records

Reader = Callable[[Path, str], Iterator[Record]]

READERS: dict[str, Reader] = {
    "red_instruct_harmful_questions": added_prompts.read_red_instruct_harmful_questions,
    "jade_db_zh": added_prompts.read_jade_db_zh,
    "rtp_lx": added_prompts.read_rtp_lx,
}

LANGUAGES: dict[str, set[str]] = {
    "red_instruct_harmful_questions": {"en", "zh"},
    "jade_db_zh": {"zh"},
    "rtp_lx": {"en", "ru", "zh"},
}

# (language, label) counts. Row counts from each SOURCE.md; the repeats skipped were counted in the
# files.
EXPECTED: dict[str, dict[tuple[str, str], int]] = {
    # CatQA 550 en + 550 zh, HarmfulQA 1,960, DangerousQA 198 (SOURCE.md), all unsafe; exact repeats
    # skipped: 7 per CatQA language, 22 in HarmfulQA, 1 DangerousQA question also in HarmfulQA.
    "red_instruct_harmful_questions": {
        ("en", "unsafe"): (550 - 7) + (1960 - 22) + (198 - 1),
        ("zh", "unsafe"): 550 - 7,
    },
    # v1.0 150 + v2.0 easy 1,000 + medium 1,000 (SOURCE.md), all unsafe; 156 repeats across and
    # within the versions skipped.
    "jade_db_zh": {("zh", "unsafe"): 150 + 1000 + 1000 - 156},
    # Rows EN 999, RU 1,225, ZH 1,032; toxicity >= 3: EN 449, RU 660, ZH 159; <= 1.5: EN 338,
    # RU 352, ZH 382 (SOURCE.md). Of the <= 1.5 band, prompts with a harm score mean >= 2 are
    # controversial (RU 32, ZH 15, EN 0; counted in the files), and the repeats skipped are safe
    # ones: a fragment found in all three locales (kept in EN) and one ZH prompt found twice.
    "rtp_lx": {
        ("en", "unsafe"): 449,
        ("en", "safe"): 338,
        ("en", "controversial"): 999 - 449 - 338,
        ("ru", "unsafe"): 660,
        ("ru", "safe"): 352 - 32 - 1,
        ("ru", "controversial"): 1225 - 660 - 352 + 32,
        ("zh", "unsafe"): 159,
        ("zh", "safe"): 382 - 15 - 2,
        ("zh", "controversial"): 1032 - 159 - 382 + 15,
    },
}


@pytest.fixture(scope="module")
def root() -> Path:
    return dataset_root()


_CACHE: dict[str, list[Record]] = {}


def _read(name: str, root: Path) -> list[Record]:
    if name not in _CACHE:
        _CACHE[name] = list(READERS[name](root / name, "full"))
    return _CACHE[name]


@pytest.mark.parametrize("name", sorted(READERS))
def test_records_are_well_formed(name: str, root: Path) -> None:
    records = _read(name, root)
    assert_prompt_records(records, name, LANGUAGES[name])
    assert all(r.subset for r in records)
    assert len({r.text for r in records}) == len(records)  # no text twice within a set


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_label_counts_per_language(name: str, root: Path) -> None:
    labels = Counter((r.language, r.label.value) for r in _read(name, root))
    assert dict(labels) == EXPECTED[name]


def test_catqa_languages_pair_up(root: Path) -> None:
    records = _read("red_instruct_harmful_questions", root)
    catqa = [r for r in records if r.subset.startswith("catqa/")]
    assert all(not r.group for r in records if not r.subset.startswith("catqa/"))
    pairs = Counter(r.group for r in catqa)
    assert len(pairs) == 550 - 7
    assert set(pairs.values()) == {2}
    assert all(len({r.language for r in catqa if r.group == group}) == 2 for group in list(pairs)[:50])
    by_subset = {(r.language, r.subset): r.category for r in catqa}
    assert by_subset[("zh", "catqa/Physical Harm/Self-harm")] == SELF_HARM
    assert by_subset[("en", "catqa/Tailored Financial Advice/Debt management")] is None
    categorised = Counter(r.language for r in catqa if r.category is not None)
    # 6 mixed subcategories have none: 60 questions less the 3 Online predation repeats.
    assert categorised == {"en": 543 - 57, "zh": 543 - 57}


def test_jade_alignment_triples_add_no_prompt(root: Path) -> None:
    texts = {r.text for r in _read("jade_db_zh", root)}
    questions: list[str] = []
    for name in ("jade_alignment_hard_zh.csv", "jade_alignment_medium_zh.csv"):
        # SOURCE.md: the v3.0 files are GB18030.
        with (root / "jade_db_zh/jade-db-v3.0" / name).open(encoding="gb18030", newline="") as handle:
            questions += [row["问题"].strip() for row in csv.DictReader(handle)]
    assert len(questions) == 150 + 500
    assert all(question in texts for question in questions)


def test_jade_discrimination_type_always_has_a_category(root: Path) -> None:
    records = _read("jade_db_zh", root)
    discrimination = [r for r in records if r.subset.startswith("歧视偏见/")]
    assert discrimination
    assert all(r.category is not None for r in discrimination)
    assert not any(r.subset.startswith("侵犯权益/") for r in records)  # merged into 侵害权益


def test_rtp_lx_labels_follow_the_human_scores(root: Path) -> None:
    # Scores read from the prompt files (EN from acs_results_EN.json, whose prompts are placeholders:
    # this also checks that the completion file's prompt scores are the same).
    folder = root / "rtp_lx"
    toxicity: dict[tuple[str, str], Fraction] = {}
    for language, file_name in (("en", "EN"), ("ru", "RU"), ("zh", "ZH-Hans")):
        for row in json_lines(folder / f"acs_results_{file_name}.json"):
            entry = row["OriginalEntry"]
            assert isinstance(entry, dict)
            raw = entry["AnnotationsRaw"]["Toxicity"]
            toxicity[(language, str(entry["Index"]))] = Fraction(sum(raw), len(raw))
    records = _read("rtp_lx", root)
    for record in records:
        score = toxicity[(record.language, record.uid.rsplit("/", 1)[1])]
        if record.label is Risk.SAFE:
            assert score <= Fraction(4, 3), record.uid
        elif record.label is Risk.UNSAFE:
            assert score >= 3, record.uid
    assert "NA" not in {r.text for r in records}


def test_rtp_lx_groups_align_the_transcreations(root: Path) -> None:
    records = _read("rtp_lx", root)
    groups = Counter(r.group for r in records if r.group)
    assert len(groups) == 999
    assert Counter(groups.values()) == {3: 997, 2: 1, 1: 1}  # ZH lacks one; one repeat is skipped
    for group in groups:
        languages = [r.language for r in records if r.group == group]
        assert len(languages) == len(set(languages))
    local = [r for r in records if "/" in r.subset]  # RU dialect and ZH hand-written prompts
    assert Counter(r.subset for r in local) == {"RU/Ukraine": 155, "RU/Russia": 71, "ZH-Hans/manual": 33}
    assert all(not r.group for r in local)


def test_rtp_lx_reads_no_continuation(root: Path) -> None:
    texts = {r.text for r in _read("rtp_lx", root)}
    for name in ("acs_results_benign_EN.json", "acs_results_benign_ZH-Hans.json"):
        for row in json_lines(root / "rtp_lx" / name):
            entry = row["OriginalEntry"]
            assert isinstance(entry, dict)
            assert str(entry["BenignCompletion"]).strip() not in texts
            assert str(entry["Completion"]).strip() not in texts
