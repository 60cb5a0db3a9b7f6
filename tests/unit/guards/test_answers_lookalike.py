"""The look-alike answer readers yield well-formed answers with the documented label counts."""

from __future__ import annotations

import csv
import json
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from topics.events import Risk
from workers.backends.taxonomy import QUERY_CATEGORIES
from workers.guards.datasets.added_prompts import read_jade_db_zh as read_jade_prompts
from workers.guards.datasets.files import json_lines
from workers.guards.datasets.lookalikes_en import read_coconot as read_coconot_prompts
from workers.guards.datasets.lookalikes_en import read_phtest as read_phtest_prompts
from workers.guards.datasets.records import Record
from workers.guards.datasets.registry import dataset_root
from workers.guards.stream_heads import answers_lookalike
from workers.guards.stream_heads.answers import PromptIndex, ResponseReader, ResponseRecord

PromptReader = Callable[[Path, str], Iterator[Record]]

READERS: dict[str, tuple[ResponseReader, PromptReader | None]] = {
    "phtest": (answers_lookalike.read_phtest, read_phtest_prompts),
    "coconot": (answers_lookalike.read_coconot, read_coconot_prompts),
    "safety_tuned_llamas": (answers_lookalike.read_safety_tuned_llamas, None),
    "jade_db_zh": (answers_lookalike.read_jade_db_zh, read_jade_prompts),
}
LANGUAGES = {"phtest": "en", "coconot": "en", "safety_tuned_llamas": "en", "jade_db_zh": "zh"}
WITH_PROMPTS = sorted(name for name, (_, prompt_reader) in READERS.items() if prompt_reader is not None)

# harmful -> count, from each SOURCE.md; every difference is explained (and verified in the files).
EXPECTED: dict[str, dict[bool, int]] = {
    # 4 models x 3,260 prompts, none harmful. The file repeats two prompts; on the repeat gpt-3.5
    # gave both answers again word for word and llama-3-8b one: those 3 repeated pairs are skipped.
    "phtest": {False: 4 * 3260 - 3},
    # 927 pairs (chosen + rejected), none harmful. 8 rows repeat a prompt; 5 of them repeat the
    # rejected answer too, and those pairs are skipped. The contrast / original files have no answers.
    "coconot": {False: 2 * 927 - 5},
    # 2,483 safe answers to harmful instructions.
    "safety_tuned_llamas": {False: 2483},
    # 650 triples. 2 violating answers of the medium file are lost "#NAME?" cells; 37 questions are
    # in both files, and for 4 of them the violating answer is the same text in both (skipped).
    "jade_db_zh": {True: 650 - 2 - 4, False: 650},
}

_CACHE: dict[str, tuple[list[ResponseRecord], PromptIndex]] = {}


@pytest.fixture(scope="module")
def root() -> Path:
    return dataset_root()


def _read(name: str, root: Path) -> tuple[list[ResponseRecord], PromptIndex]:
    """The answers of ``name``'s ``full`` split and the prompt index they were read with."""
    if name not in _CACHE:
        reader, prompt_reader = READERS[name]
        folder = root / name
        prompts = {r.uid: r for r in prompt_reader(folder, "full")} if prompt_reader is not None else {}
        _CACHE[name] = (list(reader(folder, "full", prompts)), prompts)
    return _CACHE[name]


@pytest.mark.parametrize("name", sorted(READERS))
def test_answers_are_well_formed(name: str, root: Path) -> None:
    answers, _ = _read(name, root)
    assert answers
    for answer in answers:
        assert answer.prompt.strip(), answer.uid
        assert answer.prompt == answer.prompt.strip(), answer.uid
        assert answer.response.strip(), answer.uid
        assert answer.response == answer.response.strip(), answer.uid
        assert answer.response != "#NAME?", answer.uid
        assert answer.uid.startswith(f"{name}/full/")
        assert answer.dataset == name
        assert answer.split == "full"
        assert answer.category is None or answer.category in QUERY_CATEGORIES
        assert answer.language == LANGUAGES[name]
        assert isinstance(answer.harmful, bool)
        assert answer.group
        assert answer.source
        assert answer.harmful_from is None
    assert len({a.uid for a in answers}) == len(answers)
    assert len({(a.prompt, a.response) for a in answers}) == len(answers)  # no pair twice


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_harmful_counts_match_the_source_notes(name: str, root: Path) -> None:
    answers, _ = _read(name, root)
    assert dict(Counter(a.harmful for a in answers)) == EXPECTED[name]


@pytest.mark.parametrize("name", WITH_PROMPTS)
def test_answers_join_their_prompt_record(name: str, root: Path) -> None:
    answers, prompts = _read(name, root)
    by_group = {r.split_group: r for r in prompts.values()}
    for answer in answers:
        # Every answer joins a prompt record (the repeat of a prompt joins the first copy).
        record = by_group[answer.group]
        assert answer.prompt == record.text, answer.uid
        assert answer.category == record.category, answer.uid


@pytest.mark.parametrize("name", sorted(READERS))
def test_answers_of_one_prompt_share_one_group(name: str, root: Path) -> None:
    answers, _ = _read(name, root)
    groups: defaultdict[str, set[str]] = defaultdict(set)
    prompts: defaultdict[str, set[str]] = defaultdict(set)
    for answer in answers:
        # Exact text: PHTest has two prompt records whose texts differ only in case / punctuation
        # (IDs 951 and 952); the prompt reader keeps both, so their answers keep both groups.
        groups[answer.prompt].add(answer.group)
        prompts[answer.group].add(answer.prompt)
    assert all(len(found) == 1 for found in groups.values())
    assert all(len(found) == 1 for found in prompts.values())


def test_phtest_every_model_answers_every_prompt(root: Path) -> None:
    answers, _ = _read("phtest", root)
    assert Counter(a.source for a in answers) == {
        "claude-3-haiku": 3260,
        "mistral-7b-v0.3": 3260,
        "llama-3-8b": 3260 - 1,  # repeated a repeated prompt's answer
        "gpt-3.5": 3260 - 2,
    }
    per_group = Counter(a.group for a in answers)
    # 3,258 distinct prompts; the two repeated ones have 8 answers less their skipped repeats.
    assert len(per_group) == 3258
    assert sorted(per_group.values())[-2:] == [8 - 2, 8 - 1]
    assert {a.uid.rsplit("/", 1)[1] for a in answers} == {"claude-3-haiku", "mistral-7b-v0.3", "llama-3-8b", "gpt-3.5"}


def test_coconot_answers_come_from_the_preference_pairs(root: Path) -> None:
    answers, _ = _read("coconot", root)
    assert all(a.uid.startswith("coconot/full/pref/") for a in answers)
    sides = Counter(a.uid.rsplit("/", 1)[1] for a in answers)
    assert sides == {"chosen": 927, "rejected": 927 - 5}
    assert Counter(a.source for a in answers) == {"gpt-4": 927, "coconot_pref.jsonl": 927 - 5}
    assert len({a.group for a in answers}) == 919  # distinct pref prompts
    # The other two files (incl. the should-be-refused original set) carry no answer at all.
    folder = root / "coconot"
    for file_name in ("coconot_contrast_eval.jsonl", "coconot_eval.jsonl"):
        rows = list(json_lines(folder / file_name))
        assert rows
        assert all(not str(row.get("response") or "").strip() for row in rows)


def test_safety_tuned_llamas_groups_repeated_instructions(root: Path) -> None:
    answers, prompts = _read("safety_tuned_llamas", root)
    assert not prompts
    assert all(a.category is None and a.source == "gpt-3.5-turbo" for a in answers)
    per_group = Counter(a.group for a in answers)
    assert Counter(per_group.values()) == {1: 2483 - 8, 2: 4}  # four instructions occur twice


def test_jade_answers_pair_up_per_triple(root: Path) -> None:
    answers, _ = _read("jade_db_zh", root)
    per_file = Counter((a.source, a.harmful) for a in answers)
    assert per_file == {
        ("jade_alignment_hard_zh.csv", True): 150,
        ("jade_alignment_hard_zh.csv", False): 150,
        ("jade_alignment_medium_zh.csv", True): 500 - 2 - 4,
        ("jade_alignment_medium_zh.csv", False): 500,
    }
    sides = {(a.uid.rsplit("/", 1)[1], a.harmful) for a in answers}
    assert sides == {("harmful", True), ("safe", False)}
    files_per_group: defaultdict[str, set[str]] = defaultdict(set)
    for answer in answers:
        files_per_group[answer.group].add(answer.source)
    assert len(files_per_group) == 650 - 37
    assert sum(len(files) == 2 for files in files_per_group.values()) == 37
    assert sum(a.category is not None for a in answers) > len(answers) // 2


def _write_csv(path: Path, header: list[str], rows: list[list[str]], encoding: str = "utf-8") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding=encoding, newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)


def _prompt(uid: str, text: str, category: str | None = None) -> Record:
    dataset, split = uid.split("/")[:2]
    return Record(uid=uid, text=text, label=Risk.SAFE, category=category, language="en", dataset=dataset, split=split)


def test_phtest_skips_blank_lost_and_repeated_answers(tmp_path: Path) -> None:
    header = ["ID", "Request", "Harmfulness", "Response", "Response_cls"]
    _write_csv(
        tmp_path / "evaluation_results" / "model-a.csv",
        header,
        [
            ["0", " first prompt ", "harmless", " an answer\n", "1_full_compliance"],
            ["1", "second prompt", "controversial", "   ", "2_full_refusal"],
            ["2", "first prompt", "harmless", "an answer", "1_full_compliance"],  # repeated pair
            ["3", "first prompt", "harmless", "another answer", "3_partial_refusal"],
            ["4", "third prompt", "harmless", "#NAME?", "1_full_compliance"],
            ["5", "unknown prompt", "harmless", "an answer", "1_full_compliance"],
        ],
    )
    prompts = {r.uid: r for r in (_prompt("phtest/full/0", "first prompt"), _prompt("phtest/full/4", "third prompt"))}
    answers = list(answers_lookalike.read_phtest(tmp_path, "full", prompts))
    assert [(a.uid, a.prompt, a.response, a.group) for a in answers] == [
        ("phtest/full/0/model-a", "first prompt", "an answer", "phtest/full/0"),
        ("phtest/full/3/model-a", "first prompt", "another answer", "phtest/full/0"),  # joined by text
        ("phtest/full/5/model-a", "unknown prompt", "an answer", "phtest/full/5"),  # no record: own id
    ]
    assert not any(a.harmful for a in answers)


def test_jade_reads_gb18030_triples(tmp_path: Path) -> None:
    _write_csv(
        tmp_path / "jade-db-v3.0" / "jade_alignment_hard_zh.csv",
        ["ID", "问题", "违规回答", "安全有用回答"],
        [["1", "问题甲", "回答乙", "回答丙\n"], ["2", "问题丁", "#NAME?", "回答戊"]],
        encoding="gb18030",
    )
    _write_csv(
        tmp_path / "jade-db-v3.0" / "jade_alignment_medium_zh.csv", ["ID", "问题", "违规回答", "安全有用回答"], []
    )
    prompts = {"jade_db_zh/full/v1.0/7": _prompt("jade_db_zh/full/v1.0/7", "问题甲", QUERY_CATEGORIES[0])}
    answers = list(answers_lookalike.read_jade_db_zh(tmp_path, "full", prompts))
    assert [(a.uid, a.response, a.harmful, a.category, a.group) for a in answers] == [
        ("jade_db_zh/full/v3.0-hard/1/harmful", "回答乙", True, QUERY_CATEGORIES[0], "jade_db_zh/full/v1.0/7"),
        ("jade_db_zh/full/v3.0-hard/1/safe", "回答丙", False, QUERY_CATEGORIES[0], "jade_db_zh/full/v1.0/7"),
        ("jade_db_zh/full/v3.0-hard/2/safe", "回答戊", False, None, "jade_db_zh/full/v3.0-hard/2"),
    ]
    assert {a.language for a in answers} == {"zh"}


def test_safety_tuned_llamas_appends_a_non_empty_input(tmp_path: Path) -> None:
    rows = [
        {"instruction": "Do a thing.", "input": "", "output": "No."},
        {"instruction": "Do a thing", "input": "", "output": "Still no."},  # same text_key: one group
        {"instruction": "Do another thing.", "input": " with this ", "output": "No."},
        {"instruction": " ", "input": "", "output": "Blank prompt."},
    ]
    (tmp_path / "training").mkdir()
    (tmp_path / "training" / "safety_only_data_Instructions.json").write_text(json.dumps(rows), encoding="utf-8")
    answers = list(answers_lookalike.read_safety_tuned_llamas(tmp_path, "full", {}))
    assert [(a.uid, a.prompt, a.group) for a in answers] == [
        ("safety_tuned_llamas/full/0", "Do a thing.", "safety_tuned_llamas/full/0"),
        ("safety_tuned_llamas/full/1", "Do a thing", "safety_tuned_llamas/full/0"),
        ("safety_tuned_llamas/full/2", "Do another thing.\n\nwith this", "safety_tuned_llamas/full/2"),
    ]
