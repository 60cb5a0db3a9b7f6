"""Response sets (a prompt, a model's answer, whether the answer is harmful), split enforced.

``RESPONSE_READERS`` names the answer reader of every dataset that carries answers: the four of
the first batch here (Do-Not-Answer and the JailbreakBench artifacts may be trained on, XSTest's
labelled completions and ruHateSpeech are evaluation-only), and the second batch's training sets
in ``answers_lookalike`` (answers to look-alike and harmful prompts: PHTest, CoCoNot, JADE-DB,
Safety-Tuned LLaMAs) and ``answers_dialogue`` (DiaSafety, GPTFuzz, SafeText, Latent Jailbreak).
``load_responses`` refuses a purpose the dataset's split does not allow, through the same registry
(and the same ``SplitViolation``) as every prompt loader, and hands each reader that split's
prompt records read by ``registry.load`` (for their categories and grouping; empty for a set of
answers only).

Labels of the first batch (the others' are in their modules):

- Do-Not-Answer: the human ``<model>_harmful`` flag.
- JailbreakBench: the ``jailbroken`` judge verdict (True: the answer complies harmfully).
- XSTest: a full compliance with an unsafe (``contrast_*``) prompt is harmful; every answer to a
  safe prompt, and every full or partial refusal, is not.
- ruHateSpeech: the reply the set marks hateful is harmful, the other one is not.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from types import MappingProxyType

from workers.backends import taxonomy as tx
from workers.guards.datasets.files import csv_rows, json_document
from workers.guards.datasets.records import Purpose
from workers.guards.datasets.registry import DATASETS, DatasetMissing, SplitViolation, load
from workers.guards.stream_heads import answers_dialogue, answers_lookalike
from workers.guards.stream_heads.answers import PromptIndex, ResponseReader, ResponseRecord

_DNA_MODELS: tuple[str, ...] = ("GPT4", "ChatGPT", "Claude", "ChatGLM2", "llama2-7b-chat", "vicuna-7b")


def read_do_not_answer(folder: Path, split: str, prompts: PromptIndex) -> Iterator[ResponseRecord]:
    """``data_en.csv``: 939 questions x 6 models, each answer with its human harmful flag."""
    for row in csv_rows(folder / "data_en.csv"):
        prompt = prompts[f"do_not_answer/{split}/{row['id']}"]
        for model in _DNA_MODELS:
            answer = row[f"{model}_response"]
            if not answer.strip():
                continue
            yield ResponseRecord(
                uid=f"do_not_answer/{split}/{row['id']}/{model}",
                dataset="do_not_answer",
                split=split,
                prompt=prompt.text,
                response=answer,
                harmful=row[f"{model}_harmful"] == "1",
                category=prompt.category,
                language="en",
                group=prompt.split_group,
                source=model,
            )


def read_jailbreakbench_artifacts(folder: Path, split: str, prompts: PromptIndex) -> Iterator[ResponseRecord]:
    """Every submitted attack with a response; the category is the behaviour's, not ``Jailbreak``."""
    goals = {r.split_group: r for r in prompts.values() if r.subset == "goal"}
    for path in sorted((folder / "attack-artifacts").glob("*/*/*.json")):
        document = json_document(path)
        method, model = document["parameters"]["method"], document["parameters"]["model"]
        for entry in document["jailbreaks"]:
            if not entry["prompt"] or not entry["response"]:
                continue
            group = f"jailbreakbench_artifacts/{entry['index']}"
            yield ResponseRecord(
                uid=f"jailbreakbench_artifacts/{split}/{method}-{model}-{entry['index']}/response",
                dataset="jailbreakbench_artifacts",
                split=split,
                prompt=entry["prompt"],
                response=entry["response"],
                harmful=bool(entry["jailbroken"]),
                category=goals[group].category,
                language="en",
                group=group,
                source=f"{method}/{model}",
            )


def read_xstest(folder: Path, split: str, prompts: PromptIndex) -> Iterator[ResponseRecord]:
    """The labelled completions of five models to the 450 XSTest prompts (human ``final_label``)."""
    for path in sorted((folder / "completions_labeled").glob("xstest_v2_completions_*_gpteval.csv")):
        model = path.name.removeprefix("xstest_v2_completions_").removesuffix("_gpteval.csv")
        for row in csv_rows(path):
            prompt = prompts[f"xstest/{split}/{row['id'].removeprefix('v2-')}"]
            if not row["completion"].strip():
                continue
            yield ResponseRecord(
                uid=f"xstest/{split}/{row['id']}/{model}",
                dataset="xstest",
                split=split,
                prompt=prompt.text,
                response=row["completion"],
                harmful=prompt.is_unsafe and row["final_label"] == "1_full_compliance",
                category=prompt.category,
                language="en",
                group=prompt.split_group,
                source=model,
            )


def read_ru_hatespeech_mera(folder: Path, split: str, prompts: PromptIndex) -> Iterator[ResponseRecord]:
    """Both replies of every row; the registry's records already carry prompt and reply."""
    for record in prompts.values():
        if record.prompt is None or record.response is None:
            continue
        row = record.uid.rsplit("-", 1)[0]  # "<dataset>/<split>/<row>-<reply>" -> the row's group
        yield ResponseRecord(
            uid=f"{record.uid}/response",
            dataset=record.dataset,
            split=split,
            prompt=record.prompt,
            response=record.response,
            harmful=record.is_unsafe,
            category=tx.UNETHICAL if record.is_unsafe else None,
            language=record.language,
            group=row,
            source=record.subset,
        )


RESPONSE_READERS: Mapping[str, ResponseReader] = MappingProxyType(
    {
        "do_not_answer": read_do_not_answer,
        "jailbreakbench_artifacts": read_jailbreakbench_artifacts,
        "xstest": read_xstest,
        "ru_hatespeech_mera": read_ru_hatespeech_mera,
        # The second batch: answers to look-alike and harmful prompts, then sets of answers only.
        "phtest": answers_lookalike.read_phtest,
        "coconot": answers_lookalike.read_coconot,
        "jade_db_zh": answers_lookalike.read_jade_db_zh,
        "safety_tuned_llamas": answers_lookalike.read_safety_tuned_llamas,
        "diasafety": answers_dialogue.read_diasafety,
        "gptfuzz_labeled_responses": answers_dialogue.read_gptfuzz_labeled_responses,
        "safetext": answers_dialogue.read_safetext,
        "latent_jailbreak": answers_dialogue.read_latent_jailbreak,
    }
)
RESPONSE_TRAINING_SETS: tuple[str, ...] = tuple(
    name for name in RESPONSE_READERS if DATASETS[name].splits_for(Purpose.TRAIN)
)
"""Response sets whose answers may be trained on."""
RESPONSE_EVALUATION_SETS: tuple[str, ...] = tuple(
    name for name in RESPONSE_READERS if DATASETS[name].splits_for(Purpose.EVAL)
)
"""Response sets kept for evaluation only."""


def load_responses(name: str, purpose: Purpose, root: Path) -> list[ResponseRecord]:
    """The answers of ``name``'s splits allowed for ``purpose``.

    Raises:
        KeyError: ``name`` has no answers.
        SplitViolation: ``name`` has no split that may be used for ``purpose``.
        DatasetMissing: the dataset folder is absent.
    """
    reader = RESPONSE_READERS.get(name)
    if reader is None:
        raise KeyError(f"{name} has no responses; response sets: {', '.join(RESPONSE_READERS)}")
    splits = DATASETS[name].splits_for(purpose)
    if not splits:
        raise SplitViolation(f"{name} has no split that may be used for {purpose.value}")
    folder = root / name
    if not folder.is_dir():
        raise DatasetMissing(f"dataset folder {folder} is missing")
    records: list[ResponseRecord] = []
    has_prompts = DATASETS[name].reader is not None
    for split in splits:
        prompts = {record.uid: record for record in load(name, purpose, root, (split,))} if has_prompts else {}
        records.extend(reader(folder, split, prompts))
    return records
