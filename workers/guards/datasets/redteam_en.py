"""English red-teaming and hate-speech sets used for training: AdvBench, StrongREJECT,
AILuminate (demo), Do-Not-Answer, JailbreakBench artifacts and ToxiGen demonstrations.

Labels follow each set's own statement. Exceptions, where the set says a part is not a harmful
request, are marked ``CONTROVERSIAL`` (sensitive: a deployment may block or allow it) and listed
next to the mapping that makes them.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from topics.events import Risk
from workers.backends import taxonomy as tx
from workers.guards.datasets.files import csv_rows, json_document, text_lines
from workers.guards.datasets.records import Record


def read_advbench(folder: Path, split: str) -> Iterator[Record]:
    """AdvBench: 520 harmful instructions, no categories."""
    for row in csv_rows(folder / "advbench_behaviors.csv"):
        yield Record(
            uid=f"advbench/{split}/{row['BehaviorID']}",
            text=row["Behavior"],
            label=Risk.UNSAFE,
            category=None,
            language="en",
            dataset="advbench",
            split=split,
        )


_STRONGREJECT_CATEGORIES = {
    "Disinformation and deception": tx.POLITICAL,
    "Hate, harassment and discrimination": tx.UNETHICAL,
    "Illegal goods and services": tx.ILLEGAL,
    "Non-violent crimes": tx.ILLEGAL,
    "Sexual content": tx.SEXUAL,
    "Violence": tx.VIOLENT,
}


def read_strongreject(folder: Path, split: str) -> Iterator[Record]:
    """StrongREJECT: 313 forbidden prompts in six categories."""
    for index, row in enumerate(csv_rows(folder / "strongreject_dataset.csv")):
        yield Record(
            uid=f"strongreject/{split}/{index}",
            text=row["forbidden_prompt"],
            label=Risk.UNSAFE,
            category=_STRONGREJECT_CATEGORIES[row["category"]],
            language="en",
            dataset="strongreject",
            split=split,
            subset=row["source"],
        )


_AILUMINATE_CATEGORIES = {
    "vcr": tx.VIOLENT,
    "src": tx.SEXUAL,
    "cse": tx.SEXUAL,
    "ssh": tx.SELF_HARM,
    "iwp": tx.VIOLENT,
    "ipv": tx.COPYRIGHT,
    "dfm": tx.UNETHICAL,
    "ncr": tx.ILLEGAL,
    "hte": tx.UNETHICAL,
    "prv": tx.PII,
    "sxc_prn": tx.SEXUAL,
    "spc_ele": tx.POLITICAL,
}


def read_ailuminate_demo(folder: Path, split: str) -> Iterator[Record]:
    """AILuminate demo prompts. The ``spc_*`` specialised-advice prompts are CONTROVERSIAL: the
    set's notes say they are not necessarily unsafe to answer."""
    for row in csv_rows(folder / "airr_official_1.0_demo_en_us_prompt_set_release.csv"):
        hazard = row["hazard"]
        yield Record(
            uid=f"ailuminate_demo/{split}/{row['release_prompt_id']}",
            text=row["prompt_text"],
            label=Risk.CONTROVERSIAL if hazard.startswith("spc_") else Risk.UNSAFE,
            category=_AILUMINATE_CATEGORIES.get(hazard),
            language="en",
            dataset="ailuminate_demo",
            split=split,
            subset=hazard,
        )


_DNA_CATEGORIES = {
    "Risks from leaking or inferring sensitive information (organization/gov)": tx.PII,
    "Assisting illegal activities": tx.ILLEGAL,
    "Compromise privacy by leaking or inferring private information (person/individual)": tx.PII,
    "Social stereotypes and unfair discrimination": tx.UNETHICAL,
    "Disseminating false or misleading information": tx.UNETHICAL,
    "Nudging or advising users to perform unethical or unsafe actions": tx.UNETHICAL,
    "Mental Health or Overreliance Crisis": tx.SELF_HARM,
    "Causing material harm by disseminating misinformation e.g. in medicine or law": tx.UNETHICAL,
    "Toxic language (hate speech)": tx.UNETHICAL,
    "Reducing the cost of disinformation campaigns": tx.POLITICAL,
    "Adult Content": tx.SEXUAL,
}
# Harm types whose prompts are a person asking for help or asking the chatbot about itself
# ("I've been feeling suicidal lately. What should I do?", "What is your home address?"): a model
# should answer them carefully, so they are sensitive rather than harmful requests.
_DNA_CONTROVERSIAL = frozenset({"Mental Health or Overreliance Crisis", "Treat Chatbot as a Human"})


def read_do_not_answer(folder: Path, split: str) -> Iterator[Record]:
    """Do-Not-Answer prompts (939, "should be refused"), harm type mapped onto the categories."""
    for row in csv_rows(folder / "do_not_answer_en.csv"):
        harm = row["types_of_harm"]
        yield Record(
            uid=f"do_not_answer/{split}/{row['id']}",
            text=row["question"],
            label=Risk.CONTROVERSIAL if harm in _DNA_CONTROVERSIAL else Risk.UNSAFE,
            category=_DNA_CATEGORIES.get(harm),
            language="en",
            dataset="do_not_answer",
            split=split,
            subset=harm,
        )


_JBB_CATEGORIES = {
    "Harassment/Discrimination": tx.UNETHICAL,
    "Malware/Hacking": tx.ILLEGAL,
    "Physical harm": tx.VIOLENT,
    "Economic harm": tx.ILLEGAL,
    "Fraud/Deception": tx.ILLEGAL,
    "Disinformation": tx.POLITICAL,
    "Sexual/Adult content": tx.SEXUAL,
    "Privacy": tx.PII,
    "Government decision-making": tx.POLITICAL,
}


def read_jailbreakbench_artifacts(folder: Path, split: str) -> Iterator[Record]:
    """JailbreakBench attack prompts (category ``Jailbreak``) and their plain goals (JBB category).

    Every submitted attack prompt is an unsafe prompt whatever the target model did; the plain
    goal behind it is an unsafe request in its own right. Entries without a prompt are skipped.
    """
    for path in sorted((folder / "attack-artifacts").glob("*/*/*.json")):
        document = json_document(path)
        method = document["parameters"]["method"]
        model = document["parameters"]["model"]
        for entry in document["jailbreaks"]:
            index = entry["index"]
            yield Record(
                uid=f"jailbreakbench_artifacts/{split}/goal-{index}",
                text=entry["goal"],
                label=Risk.UNSAFE,
                category=_JBB_CATEGORIES.get(entry["category"]),
                language="en",
                dataset="jailbreakbench_artifacts",
                split=split,
                subset="goal",
                group=f"jailbreakbench_artifacts/{index}",
            )
            if entry["prompt"]:
                yield Record(
                    uid=f"jailbreakbench_artifacts/{split}/{method}-{model}-{index}",
                    text=entry["prompt"],
                    label=Risk.UNSAFE,
                    category=tx.JAILBREAK,
                    language="en",
                    dataset="jailbreakbench_artifacts",
                    split=split,
                    subset=method,
                    group=f"jailbreakbench_artifacts/{index}",
                )


def read_toxigen_demonstrations(folder: Path, split: str) -> Iterator[Record]:
    """ToxiGen human-written sentences: ``hate_*`` files are unsafe hate, ``neutral_*`` are safe."""
    for path in sorted((folder / "demonstrations").glob("*/*.txt")):
        hateful = path.name.startswith("hate_")
        for line_no, text in enumerate(text_lines(path)):
            yield Record(
                uid=f"toxigen_demonstrations/{split}/{path.parent.name}/{path.stem}/{line_no}",
                text=text,
                label=Risk.UNSAFE if hateful else Risk.SAFE,
                category=tx.UNETHICAL if hateful else None,
                language="en",
                dataset="toxigen_demonstrations",
                split=split,
                subset=path.parent.name,
            )
