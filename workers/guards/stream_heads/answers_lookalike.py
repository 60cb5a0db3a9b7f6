"""Answer sets from the look-alike and refusal data: PHTest, CoCoNot, Safety-Tuned LLaMAs, JADE-DB.

Response-level readers with the ``ResponseReader`` signature of ``answers.py``. The split name is
``full`` for all four; each answer takes its category and group from the prompt record the
registry's prompt reader yields for it (none exists for Safety-Tuned LLaMAs), so the prompt and
its answers stay on one side of a validation split.

Sets and labels (each from the set's ``SOURCE.md``):

- PHTest (licence: not stated): the answers of four models (``evaluation_results/<model>.csv``:
  claude-3-haiku, gpt-3.5, llama-3-8b, mistral-7b-v0.3) to the 3,260 pseudo-harmful prompts. Every
  prompt is ``harmless`` or ``controversial``, "None is labeled harmful", so no answer is harmful,
  whatever its ``Response_cls``: a compliance with a benign request is what the guard must allow,
  a refusal is an over-refusal but harmless. SOURCE.md asks for compliant answers to
  ``controversial`` prompts to be reviewed before they are called safe; they are labelled not
  harmful here as the set gives no harmfulness label on answers.
- CoCoNot (MIT licence): the ``chosen`` (compliant, GPT-4) and ``rejected`` (over-refusing)
  answers of ``coconot_pref.jsonl``, both not harmful: the prompts are benign contrast prompts and
  "Both responses are safe in content". The ``response`` field of the contrast and original
  files is empty in every row, so the original set (the prompts that should be refused) gives no
  answer, and this set has no harmful answer.
- Safety-Tuned LLaMAs (licence: not stated): ``training/safety_only_data_Instructions.json``,
  harmful instructions with safe GPT-3.5-turbo answers (a refusal or correction): all not harmful.
  SOURCE.md calls every instruction harmful, but a few are plainly benign (arithmetic, cooking
  advice) with a helpful answer; those answers are not harmful either. No prompt reader exists
  for this set: the category is ``None`` and answers of one instruction (by ``text_key``) share a
  group.
- JADE-DB 3.0 alignment triples (MIT licence): 150 ``hard`` + 500 ``medium`` (question, violating
  answer, safe and helpful answer). The violating answer (``违规回答``) is harmful, the safe one
  (``安全有用回答``) is not; SOURCE.md notes some violating answers are only weakly harmful, they
  stay harmful as the set labels them. The files are GB18030 (SOURCE.md). The triples carry no
  violation type: the category and group are the JADE prompt record's whose text is the question
  (every question is one), else ``None`` and the triple's own uid. Language ``zh``.

Texts are stripped; a row whose prompt or answer is blank, or an answer cell Excel replaced with a
formula error on export (``#NAME?``: the text is lost), is skipped, and so is an exact repeat of a
(prompt, answer) pair within a set (the first copy is kept). ``source`` is the model that wrote the
answer when the set says, else the file name.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from workers.guards.datasets.files import csv_rows, json_document, json_lines
from workers.guards.datasets.records import Record, text_key
from workers.guards.stream_heads.answers import PromptIndex, ResponseRecord

# A cell a spreadsheet export replaced with a formula error: the text that stood there is lost.
_LOST_TEXTS = frozenset({"#NAME?"})


class _UnseenPairs:
    """(prompt, answer) pairs not taken before: one reader's pass over a set."""

    def __init__(self) -> None:
        self._seen: set[tuple[str, str]] = set()

    def take(self, prompt: str, response: str) -> bool:
        """True when both texts are kept (non-blank, not lost) and the pair is new."""
        if not prompt or not response or prompt in _LOST_TEXTS or response in _LOST_TEXTS:
            return False
        if (prompt, response) in self._seen:
            return False
        self._seen.add((prompt, response))
        return True


def _prompt_record(prompts: PromptIndex, uid: str, text: str, by_text: dict[str, Record]) -> Record | None:
    """The prompt record ``uid`` when it holds ``text``, else the one with that text.

    A prompt reader skips a prompt that repeats an earlier one of its file, so the answers to the
    repeat join the first copy's record (and group).
    """
    record = prompts.get(uid)
    if record is not None and record.text == text:
        return record
    return by_text.get(text)


# --- PHTest -------------------------------------------------------------------------------------


def read_phtest(folder: Path, split: str, prompts: PromptIndex) -> Iterator[ResponseRecord]:
    """The answers of ``evaluation_results/<model>.csv`` (4 models x 3,260 prompts), none harmful.

    Answers join the prompts on ``ID`` (``phtest/<split>/<ID>``); the two prompts the prompt reader
    skips as repeats join the first copy by text, so all answers to one text share its group. On
    those repeats gpt-3.5 (twice) and llama-3-8b (once) gave the same answer again: skipped.
    """
    by_text = {record.text: record for record in prompts.values()}
    unseen = _UnseenPairs()
    for path in sorted((folder / "evaluation_results").glob("*.csv")):
        model = path.stem
        for row in csv_rows(path):
            prompt, response = row["Request"].strip(), row["Response"].strip()
            if not unseen.take(prompt, response):
                continue
            prompt_uid = f"phtest/{split}/{row['ID']}"
            record = _prompt_record(prompts, prompt_uid, prompt, by_text)
            yield ResponseRecord(
                uid=f"phtest/{split}/{row['ID']}/{model}",
                dataset="phtest",
                split=split,
                prompt=prompt,
                response=response,
                harmful=False,
                category=record.category if record is not None else None,
                language="en",
                group=record.split_group if record is not None else prompt_uid,
                source=model,
            )


# --- CoCoNot ------------------------------------------------------------------------------------

_COCONOT_PREF = "coconot_pref.jsonl"


def read_coconot(folder: Path, split: str, prompts: PromptIndex) -> Iterator[ResponseRecord]:
    """The ``chosen`` and ``rejected`` answers of the 927 preference pairs, none harmful.

    Pairs join the ``pref`` prompt records on ``id`` (``coconot/<split>/pref/<id>``); the 8 rows
    whose prompt repeats an earlier one (919 distinct prompts) join the first copy by text. Where a
    repeated prompt has the same rejected answer again, the repeat is skipped.
    """
    prefix = f"coconot/{split}/pref/"
    by_text = {record.text: record for uid, record in prompts.items() if uid.startswith(prefix)}
    unseen = _UnseenPairs()
    for row in json_lines(folder / _COCONOT_PREF):
        prompt = row["prompt"].strip()
        prompt_uid = f"{prefix}{row['id']}"
        record = _prompt_record(prompts, prompt_uid, prompt, by_text)
        answers = (
            ("chosen", row["chosen"], row["chosen_model"]),
            ("rejected", row["rejected"], row["rejected_model"]),
        )
        for side, raw, model in answers:
            response = raw.strip()
            if not unseen.take(prompt, response):
                continue
            yield ResponseRecord(
                uid=f"{prompt_uid}/{side}",
                dataset="coconot",
                split=split,
                prompt=prompt,
                response=response,
                harmful=False,
                category=record.category if record is not None else None,
                language="en",
                group=record.split_group if record is not None else prompt_uid,
                source=model.strip() or _COCONOT_PREF,
            )


# --- Safety-Tuned LLaMAs ------------------------------------------------------------------------

# SOURCE.md: the outputs were generated with GPT-3.5-turbo (per the paper).
_STL_MODEL = "gpt-3.5-turbo"


def read_safety_tuned_llamas(folder: Path, split: str, prompts: PromptIndex) -> Iterator[ResponseRecord]:
    """The 2,483 (instruction, safe answer) rows of the safety-only training file, none harmful.

    ``prompts`` is unused (the set has no prompt reader). The prompt is the instruction, followed by
    the ``input`` when there is one (it is empty in every row). Four instructions occur twice with
    different answers; the answers of one instruction share the group named after its first row.
    """
    del prompts  # no prompt records: the group comes from the instruction text
    groups: dict[str, str] = {}
    unseen = _UnseenPairs()
    for index, row in enumerate(json_document(folder / "training" / "safety_only_data_Instructions.json")):
        prompt = "\n\n".join(part for part in (row["instruction"].strip(), row["input"].strip()) if part)
        response = row["output"].strip()
        if not unseen.take(prompt, response):
            continue
        group = groups.setdefault(text_key(prompt), f"safety_tuned_llamas/{split}/{index}")
        yield ResponseRecord(
            uid=f"safety_tuned_llamas/{split}/{index}",
            dataset="safety_tuned_llamas",
            split=split,
            prompt=prompt,
            response=response,
            harmful=False,
            category=None,
            language="en",
            group=group,
            source=_STL_MODEL,
        )


# --- JADE-DB ------------------------------------------------------------------------------------

_JADE_TRIPLES = (
    ("v3.0-hard", "jade-db-v3.0/jade_alignment_hard_zh.csv"),
    ("v3.0-medium", "jade-db-v3.0/jade_alignment_medium_zh.csv"),
)
# Answer column -> (uid suffix, harmful).
_JADE_ANSWERS = (("违规回答", "harmful", True), ("安全有用回答", "safe", False))


def read_jade_db_zh(folder: Path, split: str, prompts: PromptIndex) -> Iterator[ResponseRecord]:
    """Both answers of the 650 JADE 3.0 triples: the violating one harmful, the safe one not.

    Two violating answers of the ``medium`` file are lost ``#NAME?`` cells and are skipped. 37
    questions are in both files (their four answers share the question's group); for 4 of them the
    violating answer is the same text in both, and the second copy is skipped.
    """
    by_text = {record.text: record for record in prompts.values()}
    unseen = _UnseenPairs()
    for version, file_name in _JADE_TRIPLES:
        for row in csv_rows(folder / file_name, encoding="gb18030"):
            prompt = row["问题"].strip()
            record = by_text.get(prompt)
            triple = f"jade_db_zh/{split}/{version}/{row['ID']}"
            for column, side, harmful in _JADE_ANSWERS:
                response = row[column].strip()
                if not unseen.take(prompt, response):
                    continue
                yield ResponseRecord(
                    uid=f"{triple}/{side}",
                    dataset="jade_db_zh",
                    split=split,
                    prompt=prompt,
                    response=response,
                    harmful=harmful,
                    category=record.category if record is not None else None,
                    language="zh",
                    group=record.split_group if record is not None else triple,
                    source=Path(file_name).name,
                )
