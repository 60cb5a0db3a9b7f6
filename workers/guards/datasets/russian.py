"""Russian sets: distorted-toxicity VK comments, ruHateSpeech (MERA) and RUSSE-2022 detox pairs."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from topics.events import Risk
from workers.backends import taxonomy as tx
from workers.guards.datasets.files import csv_rows
from workers.guards.datasets.records import Record


def read_ru_distorted_toxicity(folder: Path, split: str) -> Iterator[Record]:
    """VK comments, toxicity 0/1 (single annotator); toxic = unsafe ``Unethical Acts``.

    The text is the comment as written (obfuscated spellings included: that is the test). The 104
    blank comments (all non-toxic) are skipped: there is nothing to judge.
    """
    for row in csv_rows(folder / "russian_distorted_toxicity.tsv", delimiter="\t"):
        if not row["comments"].strip():
            continue
        toxic = row["toxicity"] == "1"
        yield Record(
            uid=f"ru_distorted_toxicity/{split}/{row['comment_id']}",
            text=row["comments"],
            label=Risk.UNSAFE if toxic else Risk.SAFE,
            category=tx.UNETHICAL if toxic else None,
            language="ru",
            dataset="ru_distorted_toxicity",
            split=split,
            subset="distorted" if row["distortion"] == "1" else "plain",
        )


def read_ru_hatespeech_mera(folder: Path, split: str) -> Iterator[Record]:
    """ruHateSpeech: a rude comment and two replies, one of them hateful toward a target group.

    Each reply becomes a response record (``prompt`` = the comment, ``response`` = the reply);
    prompt guards judge the reply text alone. The other reply is only the less toxic one of the
    pair, so its ``SAFE`` label is noisy: read false positives on this set with that in mind.
    """
    for index, row in enumerate(csv_rows(folder / "data.csv")):
        hateful = int(row["outputs"])
        for reply in (1, 2):
            unsafe = reply == hateful
            yield Record(
                uid=f"ru_hatespeech_mera/{split}/{index}-{reply}",
                text=row[f"reply_{reply}"],
                label=Risk.UNSAFE if unsafe else Risk.SAFE,
                category=tx.UNETHICAL if unsafe else None,
                language="ru",
                dataset="ru_hatespeech_mera",
                split=split,
                subset=row["target_group"],
                prompt=row["replic"],
                response=row[f"reply_{reply}"],
            )


def read_russe_detox_2022(folder: Path, split: str) -> Iterator[Record]:
    """RUSSE-2022 detox: each toxic comment (unsafe) with its human neutral paraphrases (safe).

    A few comments in ``train.tsv`` contain raw line breaks (the file is unquoted); their
    continuation lines have no numeric index and are skipped, as are rows with an empty comment.
    """
    rows = csv_rows(folder / f"{split}.tsv", delimiter="\t", quoted=False)
    for index, row in enumerate(rows):
        toxic = (row.get("toxic_comment") or "").strip()
        if not toxic or not (row.get("index") or "0").strip().isdigit():
            continue
        yield Record(
            uid=f"russe_detox_2022/{split}/{index}/toxic",
            text=toxic,
            label=Risk.UNSAFE,
            category=tx.UNETHICAL,
            language="ru",
            dataset="russe_detox_2022",
            split=split,
            group=f"russe_detox_2022/{split}/{index}",
        )
        for ref in (1, 2, 3):
            if neutral := (row.get(f"neutral_comment{ref}") or "").strip():
                yield Record(
                    uid=f"russe_detox_2022/{split}/{index}/neutral{ref}",
                    text=neutral,
                    label=Risk.SAFE,
                    category=None,
                    language="ru",
                    dataset="russe_detox_2022",
                    split=split,
                    group=f"russe_detox_2022/{split}/{index}",
                )
