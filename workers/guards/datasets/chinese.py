"""Chinese sets: Flames, CHiSafetyBench, CValues and COLD."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from topics.events import Risk
from workers.backends import taxonomy as tx
from workers.guards.datasets.files import csv_rows, json_document, json_lines
from workers.guards.datasets.records import Record

_FLAMES_CATEGORIES = {
    ("Fairness", "Bias and discrimination"): tx.UNETHICAL,
    ("Fairness", "Toxic language"): tx.UNETHICAL,
    ("Morality", "Chinese values"): tx.UNETHICAL,
    ("Morality", "Disobey social norm"): tx.UNETHICAL,
    ("Morality", "Non-environmental friendly"): tx.UNETHICAL,
    ("Data protection", "Personal data"): tx.PII,
    ("Data protection", "Sensitive information"): tx.PII,
    ("Legality", "Law violation"): tx.ILLEGAL,
    ("Safety", "Physical harm"): tx.VIOLENT,
    ("Safety", "Mental harm"): tx.SELF_HARM,
    ("Safety", "Property safety"): tx.ILLEGAL,
}


def read_flames_zh(folder: Path, split: str) -> Iterator[Record]:
    """Flames-1k: adversarial prompts meant to elicit misaligned answers; all counted unsafe.

    Many look benign on the surface (the set's point), so low recall here is expected of any
    prompt-only classifier. ``Non-anthropomorphism`` has no matching category (``None``).
    """
    for index, row in enumerate(json_lines(folder / "Flames_1k_Chinese.jsonl")):
        key = (row["dimension"], row["subcomponent"])
        yield Record(
            uid=f"flames_zh/{split}/{index}",
            text=row["prompt"],
            label=Risk.UNSAFE,
            category=_FLAMES_CATEGORIES.get(key),
            language="zh",
            dataset="flames_zh",
            split=split,
            subset=f"{key[0]}/{key[1]}",
        )


_CHISAFETY_CATEGORIES = {
    "宣扬恐怖主义、极端主义": tx.VIOLENT,  # terrorism and extremism
    "宣扬民族仇恨": tx.UNETHICAL,  # ethnic hatred
    "煽动分裂国家、破坏国家统一和社会稳定": tx.POLITICAL,  # separatism
    "危害国家安全和利益、损害国家形象": tx.POLITICAL,  # national security and image
    "煽动颠覆国家政权、推翻社会主义制度": tx.POLITICAL,  # subversion of state power
    "传播虚假有害信息": tx.POLITICAL,  # false harmful information
    "其他法律、行政法规禁止的内容": tx.ILLEGAL,  # other illegal content
    "年龄歧视内容": tx.UNETHICAL,  # the rest are kinds of discrimination
    "性别歧视内容": tx.UNETHICAL,
    "民族歧视": tx.UNETHICAL,
    "国别歧视": tx.UNETHICAL,
    "其他方面歧视": tx.UNETHICAL,
    "信仰歧视": tx.UNETHICAL,
    "健康歧视内容": tx.UNETHICAL,
    "职业歧视内容": tx.UNETHICAL,
    "地域歧视内容": tx.UNETHICAL,
}
# "宣扬暴力、淫秽色情" (violence or pornography) spans two categories, so it maps to None.


def read_chisafetybench_zh(folder: Path, split: str) -> Iterator[Record]:
    """CHiSafetyBench refuse-to-answer questions: all unsafe."""
    document = json_document(folder / "safety_denial_2024-06-12-210436.json")
    for group in document:
        for row in group["infos"]:
            yield Record(
                uid=f"chisafetybench_zh/{split}/{row['id']}",
                text=row["question"],
                label=Risk.UNSAFE,
                category=_CHISAFETY_CATEGORIES.get(row["category"]),
                language="zh",
                dataset="chisafetybench_zh",
                split=split,
                subset=row["category"],
            )


def read_cvalues_zh(folder: Path, split: str) -> Iterator[Record]:
    """CValues responsibility prompts: sensitive but benign questions, used as hard-benign (safe)."""
    for row in json_lines(folder / "cvalues_responsibility_prompts.jsonl"):
        yield Record(
            uid=f"cvalues_zh/{split}/{row['id_']}",
            text=row["prompt"],
            label=Risk.SAFE,
            category=None,
            language="zh",
            dataset="cvalues_zh",
            split=split,
            subset=row["domain_en"],
        )


def read_cold_zh(folder: Path, split: str) -> Iterator[Record]:
    """COLD comments (``train``, ``dev`` or ``test`` file): offensive = unsafe ``Unethical Acts``."""
    for row in csv_rows(folder / f"{split}.csv"):
        offensive = row["label"] == "1"
        yield Record(
            uid=f"cold_zh/{split}/{row['']}",  # the id column has an empty header
            text=row["TEXT"],
            label=Risk.UNSAFE if offensive else Risk.SAFE,
            category=tx.UNETHICAL if offensive else None,
            language="zh",
            dataset="cold_zh",
            split=split,
            subset=row["topic"],
        )
