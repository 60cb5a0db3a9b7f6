"""Answer sets with no prompt reader: dialogue replies, jailbroken answers, advice, translations.

Four datasets carry a prompt, an answer and a human verdict on the answer, and nothing a prompt
loader reads; each reader here keeps the common ``ResponseReader`` signature and ignores its
(empty) prompt index.

- DiaSafety (Apache-2.0): context-sensitive unsafe chit-chat replies to a user utterance, split
  ``train`` / ``val`` / ``test`` (``<split>.json``). The ``Unsafe`` label is harmful, ``Safe`` is
  not; the five DiaSafety categories map through ``DIASAFETY_CATEGORIES``.
- GPTFuzz labelled responses (MIT): target-model answers to jailbreak templates filled with one of
  100 harmful questions, split ``train`` / ``evaluate`` by question. ``label`` 1 (jailbroken) is
  harmful, 0 (refusal) is not. The prompt is the question: the template of a row is not recorded.
  No categories are given, so none is set.
- SafeText (MIT): physical-safety scenarios with human-written safe and unsafe advice (split
  ``full``). The scenario is the prompt, each advice an answer; unsafe advice is harmful, in
  ``Suicide & Self-Harm`` (see ``read_safetext``).
- Latent Jailbreak (MIT): answers of BELLE-7B-2M, ChatGLM2-6B and ChatGPT to template P1 (translate
  a sentence that asks for a toxic sentence about an identity group, the instruction as prefix or
  suffix), split ``full``. ``safety == "unsafe"`` is harmful, in ``Unethical Acts`` (hate speech);
  the language is ``zh`` when the answer holds Han characters, else ``en``.

Non-harmful answers carry no category. Rows with a blank prompt or answer are skipped; texts are
stripped.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import MappingProxyType

from workers.backends import taxonomy as tx
from workers.guards.datasets.files import csv_rows, json_document
from workers.guards.datasets.records import text_key
from workers.guards.stream_heads.answers import PromptIndex, ResponseRecord

DIASAFETY_CATEGORIES: Mapping[str, str] = MappingProxyType(
    {
        # The reply insults or belittles the user: offensive language / harassment, which Qwen3Guard
        # lists under Unethical Acts.
        "Offending User": tx.UNETHICAL,
        # The reply ignores a user's self-harm, suicide or drug-risk cues (or goes along with them):
        # the harm is to the user themselves, Suicide & Self-Harm.
        "Risk Ignorance": tx.SELF_HARM,
        # The reply gives unqualified medical / legal advice. No query category is about specialised
        # advice; it facilitates no crime (not Non-violent Illegal Acts) and the user does not seek
        # to hurt themselves (not Self-Harm), so it falls to the catch-all Unethical Acts
        # (irresponsible conduct that is not illegal).
        "Unauthorized Expertise": tx.UNETHICAL,
        # The reply agrees with a toxic context: endorsing offensive or hateful speech, Unethical Acts.
        "Toxicity Agreement": tx.UNETHICAL,
        # The reply voices a biased opinion about a group: bias / stereotype / discrimination, which
        # Qwen3Guard lists under Unethical Acts.
        "Biased Opinion": tx.UNETHICAL,
    }
)
"""DiaSafety's five unsafety types -> query categories (for harmful answers only)."""

_HAN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002fa1f]")


def _language(text: str) -> str:
    """``zh`` when ``text`` holds a CJK (Han) character, else ``en``."""
    return "zh" if _HAN.search(text) else "en"


def _text_group(dataset: str, text: str) -> str:
    """A group named by the normalised text (``text_key``), so spelling variants of a prompt join."""
    digest = hashlib.blake2b(text_key(text).encode(), digest_size=8).hexdigest()
    return f"{dataset}/{digest}"


def read_diasafety(folder: Path, split: str, prompts: PromptIndex) -> Iterator[ResponseRecord]:
    """``<split>.json``: (context, reply) pairs with a Safe/Unsafe verdict and an unsafety type.

    The group is the normalised context, shared across splits (a context can recur in train, val
    and test). ``prompts`` is unused: the set has no prompt reader.
    """
    for index, row in enumerate(json_document(folder / f"{split}.json")):
        prompt, response = str(row["context"]).strip(), str(row["response"]).strip()
        if not prompt or not response:
            continue
        harmful = row["label"] == "Unsafe"
        yield ResponseRecord(
            uid=f"diasafety/{split}/{index}",
            dataset="diasafety",
            split=split,
            prompt=prompt,
            response=response,
            harmful=harmful,
            category=DIASAFETY_CATEGORIES[row["category"]] if harmful else None,
            language="en",
            group=_text_group("diasafety", prompt),
            source=f"{split}.json",
        )


def read_gptfuzz_labeled_responses(folder: Path, split: str, prompts: PromptIndex) -> Iterator[ResponseRecord]:
    """``responses_labeled/<split>.csv``: answers to templated harmful questions, 1 = jailbroken.

    The prompt is the question (``questions/question_list.csv`` by index); answers of one question
    share a group. ``prompts`` is unused: the set has no prompt reader.
    """
    questions = {row["index"]: row["text"].strip() for row in csv_rows(folder / "questions/question_list.csv")}
    file_name = f"responses_labeled/{split}.csv"
    for index, row in enumerate(csv_rows(folder / file_name)):
        prompt, response = questions[row["question"]], row["Response"].strip()
        if not prompt or not response:
            continue
        yield ResponseRecord(
            uid=f"gptfuzz_labeled_responses/{split}/{index}",
            dataset="gptfuzz_labeled_responses",
            split=split,
            prompt=prompt,
            response=response,
            harmful=row["label"] == "1",
            category=None,  # the set gives no categories
            language=_language(response),  # a few answers are (partly) Chinese
            group=f"gptfuzz_labeled_responses/{row['question']}",
            source=file_name,
        )


def read_safetext(folder: Path, split: str, prompts: PromptIndex) -> Iterator[ResponseRecord]:
    """``SafeText.json``: every safe and unsafe advice of every scenario (uid by scenario index).

    Unsafe advice is dangerous guidance that would hurt the person in the scenario if followed,
    not violence against anyone, so not ``Violent``. Qwen3Guard's ``Suicide & Self-Harm`` covers
    "dangerous activities that could lead to serious injury or death", the closest fit. Advices of
    one scenario share a group. ``prompts`` is unused: the set has no prompt reader.
    """
    document = json_document(folder / "SafeText.json")
    for number, (scenario, advice) in enumerate(document.items()):
        prompt = str(scenario).strip()
        for kind in ("safe", "unsafe"):
            harmful = kind == "unsafe"
            for index, text in enumerate(advice[kind]):
                response = str(text).strip()
                if not prompt or not response:
                    continue
                yield ResponseRecord(
                    uid=f"safetext/{split}/{number}/{kind}/{index}",
                    dataset="safetext",
                    split=split,
                    prompt=prompt,
                    response=response,
                    harmful=harmful,
                    category=tx.SELF_HARM if harmful else None,
                    language="en",
                    group=f"safetext/{number}",
                    source="SafeText.json",
                )


_LATENT_MODELS: tuple[str, ...] = ("BELLE-7B-2M", "ChatGLM2-6B", "ChatGPT")
_LATENT_POSITIONS: tuple[str, ...] = ("prefix", "suffix")


def read_latent_jailbreak(folder: Path, split: str, prompts: PromptIndex) -> Iterator[ResponseRecord]:
    """``data/P1/<model>/P1_<position>.json``: 3 models x 2 positions x 16 target groups x 30 answers.

    The category of an unsafe answer is ``Unethical Acts``: the answers are identity attacks (a
    toxic sentence about a protected group), and Qwen3Guard's Unethical Acts is the category that
    names hate speech and discrimination; they describe no violent act, so not ``Violent``. One
    prompt is one (position, target group) pair, the same for all three models, and names the
    group. ``prompts`` is unused: the set has no prompt reader.
    """
    for model in _LATENT_MODELS:
        for position in _LATENT_POSITIONS:
            document = json_document(folder / "data/P1" / model / f"P1_{position}.json")
            for target, rows in document.items():
                key = str(target).strip().replace(" ", "_")
                for index, row in enumerate(rows):
                    prompt, response = str(row["context"]).strip(), str(row["response"]).strip()
                    if not prompt or not response:
                        continue
                    harmful = row["safety"] == "unsafe"
                    yield ResponseRecord(
                        uid=f"latent_jailbreak/{split}/{model}/P1_{position}/{key}/{index}",
                        dataset="latent_jailbreak",
                        split=split,
                        prompt=prompt,
                        response=response,
                        harmful=harmful,
                        category=tx.UNETHICAL if harmful else None,
                        language=_language(response),
                        group=f"latent_jailbreak/P1_{position}/{key}",
                        source=f"{model}/P1_{position}",
                    )
