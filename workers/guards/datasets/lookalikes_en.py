"""English over-refusal / contrast sets used for training: PHTest, CoCoNot, OKTest, WildJailbreak
(evaluation file), an OR-Bench-80K subset and ORFuzz.

These sets hold prompts that *look* harmful (trigger words, violent verbs, jailbreak framing,
harmful sentences wrapped in a benign meta-task) but ask for something benign. They teach the guard
not to over-block, so their look-alike prompts are ``SAFE`` (``CONTROVERSIAL`` where the set itself
says borderline) with category ``None``. Where a set also ships genuinely harmful prompts (the
CoCoNot safety-concern requests, WildJailbreak's adversarial harmful prompts, the OR-Bench-Toxic and
AdvBench rows of ORFuzz's user study) those are ``UNSAFE`` with a mapped category where the set's
own label allows one. Every mapping cites the set's ``SOURCE.md``; response and answer columns are
ignored (these are prompt-level readers).

CoCoNot's ``coconot_pref.jsonl`` *is* read: its prompts are benign contrast prompts ("The prompts
are benign look-alikes (safe)", SOURCE.md), none of them occurs in the other two files, so they add
919 distinct, clearly labelled prompts. Its ``chosen``/``rejected`` answers are ignored.

Prompts are stripped of surrounding whitespace. Blank prompts, and a prompt that repeats an earlier
one of the same file exactly, are skipped.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from pathlib import Path

from topics.events import Risk
from workers.backends import taxonomy as tx
from workers.guards.datasets.files import csv_rows, json_lines
from workers.guards.datasets.records import Record, UnseenTexts, text_key

# A cell Excel replaced with a formula error on export: the prompt that stood there is lost, so the
# row's label describes a text we no longer have (one CoCoNot "wildchats" row is exactly this).
_LOST_TEXTS = frozenset({"#NAME?"})


_PHTEST_LABELS = {"harmless": Risk.SAFE, "controversial": Risk.CONTROVERSIAL}


def read_phtest(folder: Path, split: str) -> Iterator[Record]:
    """PHTest pseudo-harmful prompts: ``harmless`` 2,069 are safe, ``controversial`` 1,191 are
    controversial (SOURCE.md: none is labelled harmful). Two prompts occur twice in the file with the
    same label; the repeat is skipped, leaving 2,068 / 1,190."""
    unseen = UnseenTexts(_LOST_TEXTS)
    for row in {row["ID"]: row for row in csv_rows(folder / "dataset_v0.1.csv")}.values():
        if not (text := unseen.take(row["Request"])):
            continue
        harmfulness = row["Harmfulness"]
        yield Record(
            uid=f"phtest/{split}/{row['ID']}",
            text=text,
            label=_PHTEST_LABELS[harmfulness],
            category=None,
            language="en",
            dataset="phtest",
            split=split,
            subset=harmfulness,
        )


_COCONOT_SAFETY = "Requests with safety concerns"
# Subcategories of CoCoNot's original (noncompliance) set under "Requests with safety concerns", the
# only part SOURCE.md calls a safety issue. ``None`` where the subcategory spans several harms.
_COCONOT_UNSAFE_CATEGORIES: dict[str, str | None] = {
    "privacy violations": tx.PII,
    "copyright violations": tx.COPYRIGHT,
    # Requests to write false claims as fact (fake studies, conspiracy articles); the project maps
    # misinformation onto Unethical Acts elsewhere too (Do-Not-Answer in redteam_en).
    "misinformation": tx.UNETHICAL,
    # Slurs, derogatory statements and supremacist claims about groups: hate speech.
    "triggers for offensive language": tx.UNETHICAL,
    # Spans violence (poisoning a partner), illegal acts (meth, fake IDs, hacking), suicide methods
    # and risky self-treatment (home surgery, overdoses): no single category fits.
    "dangerous or sensitive topics": None,
    # Real WildChat user prompts, mostly sexual requests but also insults, profanity and a few
    # harmless or garbled ones: no single category fits.
    "wildchats": None,
    # The one safety-concern row filed as "incomprehensible" is a garbled adversarial-suffix prompt
    # (GCG-style token soup with an embedded instruction), i.e. a jailbreak attempt.
    "incomprehensible": tx.JAILBREAK,
}


def _coconot_record(split: str, part: str, row: dict[str, str], text: str, unsafe: bool) -> Record:
    subcategory = row["subcategory"]
    return Record(
        uid=f"coconot/{split}/{part}/{row['id']}",
        text=text,
        label=Risk.UNSAFE if unsafe else Risk.SAFE,
        category=_COCONOT_UNSAFE_CATEGORIES[subcategory] if unsafe else None,
        language="en",
        dataset="coconot",
        split=split,
        subset=f"{part}/{subcategory}",
    )


def read_coconot(folder: Path, split: str) -> Iterator[Record]:
    """CoCoNot prompts from three files (subset ``<part>/<subcategory>``).

    - ``contrast``: 379 benign look-alikes "that should be complied with", all safe.
    - ``original``: 1,000 prompts that should not be complied with. Only the 394 "Requests with
      safety concerns" are harms (unsafe); the Incomplete, Unsupported, Indeterminate and Humanizing
      requests are refused for non-safety reasons and SOURCE.md says "Do not label them unsafe", so
      they are safe. One safety row is a lost spreadsheet cell and is skipped, leaving 393 unsafe.
    - ``pref``: 927 contrast prompts (919 distinct), benign look-alikes, all safe.
    """
    parts = (
        ("contrast", "coconot_contrast_eval.jsonl"),
        ("original", "coconot_eval.jsonl"),
        ("pref", "coconot_pref.jsonl"),
    )
    for part, file_name in parts:
        unseen = UnseenTexts(_LOST_TEXTS)
        for row in {row["id"]: row for row in json_lines(folder / file_name)}.values():
            if not (text := unseen.take(row["prompt"])):
                continue
            unsafe = part == "original" and row["category"] == _COCONOT_SAFETY
            yield _coconot_record(split, part, row, text, unsafe)


def read_oktest(folder: Path, split: str) -> Iterator[Record]:
    """OKTest: 300 + 50 held-out prompts with harmful-looking words, all benign (SOURCE.md: the
    held-out set is "generated in the same manner"). Subset is the file (``OKTest``,
    ``OKTest_heldout``); 10 prompts occur in both files, the corpus builder drops the repeat."""
    for file_name in ("OKTest.csv", "OKTest_heldout.csv"):
        stem = Path(file_name).stem
        unseen = UnseenTexts(_LOST_TEXTS)
        for index, row in enumerate(csv_rows(folder / file_name)):
            if not (text := unseen.take(row["prompt"])):
                continue
            yield Record(
                uid=f"oktest/{split}/{stem}/{index}",
                text=text,
                label=Risk.SAFE,
                category=None,
                language="en",
                dataset="oktest",
                split=split,
                subset=stem,
            )


_WILDJAILBREAK_LABELS = {"adversarial_harmful": Risk.UNSAFE, "adversarial_benign": Risk.SAFE}


def read_wildjailbreak_eval(folder: Path, split: str) -> Iterator[Record]:
    """WildJailbreak evaluation prompts: 1,989 ``adversarial_harmful`` (unsafe, category Jailbreak:
    jailbreak-style rewrites of harmful requests, the file gives no harm category) and 210
    ``adversarial_benign`` (safe: jailbreak framing around a harmless request). The file has no
    vanilla source prompts, so there is nothing to group."""
    unseen = UnseenTexts(_LOST_TEXTS)
    for index, row in enumerate(csv_rows(folder / "eval.tsv", delimiter="\t")):
        if not (text := unseen.take(row["adversarial"])):
            continue
        data_type = row["data_type"]
        label = _WILDJAILBREAK_LABELS[data_type]
        yield Record(
            uid=f"wildjailbreak_eval/{split}/{index}",
            text=text,
            label=label,
            category=tx.JAILBREAK if label is Risk.UNSAFE else None,
            language="en",
            dataset="wildjailbreak_eval",
            split=split,
            subset=data_type,
        )


_ORBENCH_CATEGORIES = ("harmful", "illegal", "sexual", "unethical", "violence")


def read_orbench_80k_subset(folder: Path, split: str) -> Iterator[Record]:
    """OR-Bench-80K subset: 5 x 200 "seemingly toxic" prompts, all safe; subset is the OR-Bench
    category the prompt resembles.

    ``orbench_harmful200.csv`` is named after OR-Bench's "harmful" category, not after toxic content:
    SOURCE.md says all five files are OR-Bench-80K rows, "benign by construction" (the toxic
    OR-Bench prompts are a separate release, not in this folder). The prompt is ``text_en``; the
    ``task_hard_*`` columns are another study's authority prefix and the fr/de/it columns its
    translations, so both are ignored.
    """
    for category in _ORBENCH_CATEGORIES:
        unseen = UnseenTexts(_LOST_TEXTS)
        for row in {row["prompt_id"]: row for row in csv_rows(folder / f"orbench_{category}200.csv")}.values():
            if not (text := unseen.take(row["text_en"])):
                continue
            yield Record(
                uid=f"orbench_80k_subset/{split}/{row['prompt_id']}",
                text=text,
                label=Risk.SAFE,
                category=None,
                language="en",
                dataset="orbench_80k_subset",
                split=split,
                subset=row["or_category"],
            )


# ``user_study.csv`` ``classification`` (the prompt's source, SOURCE.md): ORFuzz-generated ("COR") and
# OR-Bench-Hard-1K prompts are benign over-refusal prompts; OR-Bench-Toxic and AdvBench prompts are
# harmful requests. Neither harmful source gives a harm category.
_USER_STUDY_LABELS = {
    "COR": Risk.SAFE,
    "eval-or-bench-hard-1k": Risk.SAFE,
    "eval-or-bench-toxic": Risk.UNSAFE,
    "eval-advbench": Risk.UNSAFE,
}
# A meta-task (repeat / translate / count the words of) followed by a colon and the wrapped sentence.
_WRAPPED = re.compile(r"^[^:\n]{1,120}:\s*(?P<inner>\S.*)$", re.DOTALL)


def _orfuzz_group(text: str) -> str:
    """Prompts wrapping the same sentence in different meta-tasks (repeat / translate / count the
    words) are variants of one another; "" for prompts that wrap nothing."""
    match = _WRAPPED.match(text)
    if match is None:
        return ""
    digest = hashlib.sha1(text_key(match["inner"]).encode(), usedforsecurity=False).hexdigest()[:16]
    return f"orfuzz/wrapped-{digest}"


def read_orfuzz(folder: Path, split: str) -> Iterator[Record]:
    """ORFuzz over-refusal prompts, from both files (subset ``ORFuzz`` or ``user_study/<source>``).

    ``ORFuzz.csv``: 1,855 prompts, benign by construction (safe). SOURCE.md warns the benign label
    comes from construction plus an LLM judge and that a few rows look problematic; they are still
    labelled as the set labels them. About 2% are French or mixed French/English translation requests;
    they are tagged ``en`` like the rest, as SOURCE.md gives the set's language as English.

    ``user_study.csv``: its ``input`` column is a prompt (the other columns are five models' answers
    and judge rates, ignored). The ``classification`` column names the prompt's source, which
    SOURCE.md maps to benign (COR 210, OR-Bench-Hard-1K 134) vs harmful (OR-Bench-Toxic 66,
    AdvBench 54); the harmful ones are unsafe, category ``None``.

    ``group`` ties prompts that wrap the same sentence in different meta-tasks, across both files.
    """
    unseen = UnseenTexts(_LOST_TEXTS)
    for index, row in enumerate(csv_rows(folder / "ORFuzz.csv")):
        if not (text := unseen.take(row["input"])):
            continue
        yield Record(
            uid=f"orfuzz/{split}/ORFuzz/{index}",
            text=text,
            label=Risk.SAFE,
            category=None,
            language="en",
            dataset="orfuzz",
            split=split,
            subset="ORFuzz",
            group=_orfuzz_group(text),
        )
    unseen = UnseenTexts(_LOST_TEXTS)
    for index, row in enumerate(csv_rows(folder / "user_study.csv")):
        if not (text := unseen.take(row["input"])):
            continue
        source = row["classification"]
        yield Record(
            uid=f"orfuzz/{split}/user_study/{index}",
            text=text,
            label=_USER_STUDY_LABELS[source],
            category=None,
            language="en",
            dataset="orfuzz",
            split=split,
            subset=f"user_study/{source}",
            group=_orfuzz_group(text),
        )
