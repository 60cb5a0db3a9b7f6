"""Which dataset split may be used for what, enforced at the one place every loader goes through.

The split follows ``shared/datasets/README.md``: evaluation-only sets (and the test split of
ToxicChat, HarmBench and COLD) are never read for training or threshold selection. ``load`` raises
``SplitViolation`` when asked to; there is no flag to override it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

from workers.guards.datasets import (
    added_prompts,
    benchmarks_en,
    chinese,
    lookalikes_en,
    multilingual,
    redteam_en,
    russian,
)
from workers.guards.datasets.records import Purpose, Record

Reader = Callable[[Path, str], Iterator[Record]]

_TRAIN = Purpose.TRAIN
_EVAL = Purpose.EVAL


class SplitViolation(ValueError):
    """A split was requested for a purpose the dataset split does not allow."""


class DatasetMissing(FileNotFoundError):
    """The dataset folder (or the datasets root) is not where it should be."""


@dataclass(frozen=True, slots=True)
class DatasetSpec:
    """A dataset folder, its prompt reader and the purpose of each of its splits.

    ``reader`` is None for a set of answers only (prompt, answer, harm label), which has no prompt
    records: its answers are read by ``workers.guards.stream_heads.responses``, under the same split.
    """

    name: str
    reader: Reader | None
    splits: Mapping[str, Purpose]

    def splits_for(self, purpose: Purpose) -> tuple[str, ...]:
        return tuple(split for split, allowed in self.splits.items() if allowed is purpose)


def _spec(name: str, reader: Reader | None, **splits: Purpose) -> DatasetSpec:
    return DatasetSpec(name=name, reader=reader, splits=MappingProxyType(splits))


DATASETS: Mapping[str, DatasetSpec] = MappingProxyType(
    {
        spec.name: spec
        for spec in (
            # Evaluation-only sets, in report order.
            _spec("xstest", benchmarks_en.read_xstest, test=_EVAL),
            _spec("openai_moderation", benchmarks_en.read_openai_moderation, test=_EVAL),
            _spec("toxic_chat", benchmarks_en.read_toxic_chat, test=_EVAL, train=_TRAIN),
            _spec("simple_safety_tests", benchmarks_en.read_simple_safety_tests, test=_EVAL),
            _spec("harmbench", benchmarks_en.read_harmbench, test=_EVAL, val=_TRAIN),
            _spec("cold_zh", chinese.read_cold_zh, test=_EVAL, train=_TRAIN, dev=_TRAIN),
            _spec("flames_zh", chinese.read_flames_zh, test=_EVAL),
            _spec("chisafetybench_zh", chinese.read_chisafetybench_zh, test=_EVAL),
            _spec("ru_distorted_toxicity", russian.read_ru_distorted_toxicity, test=_EVAL),
            _spec("ru_hatespeech_mera", russian.read_ru_hatespeech_mera, test=_EVAL),
            # Training sets.
            _spec("do_not_answer", redteam_en.read_do_not_answer, full=_TRAIN),
            _spec("jailbreakbench_artifacts", redteam_en.read_jailbreakbench_artifacts, full=_TRAIN),
            _spec("advbench", redteam_en.read_advbench, full=_TRAIN),
            _spec("strongreject", redteam_en.read_strongreject, full=_TRAIN),
            _spec("ailuminate_demo", redteam_en.read_ailuminate_demo, full=_TRAIN),
            _spec("toxigen_demonstrations", redteam_en.read_toxigen_demonstrations, full=_TRAIN),
            _spec("xsafety", multilingual.read_xsafety, full=_TRAIN),
            _spec("multijail", multilingual.read_multijail, full=_TRAIN),
            _spec("cvalues_zh", chinese.read_cvalues_zh, full=_TRAIN),
            _spec("russe_detox_2022", russian.read_russe_detox_2022, train=_TRAIN, dev=_TRAIN, test=_TRAIN),
            # Second batch: benign look-alikes, then more harmful questions and Russian and Chinese.
            _spec("phtest", lookalikes_en.read_phtest, full=_TRAIN),
            _spec("coconot", lookalikes_en.read_coconot, full=_TRAIN),
            _spec("oktest", lookalikes_en.read_oktest, full=_TRAIN),
            _spec("wildjailbreak_eval", lookalikes_en.read_wildjailbreak_eval, full=_TRAIN),
            _spec("orbench_80k_subset", lookalikes_en.read_orbench_80k_subset, full=_TRAIN),
            _spec("orfuzz", lookalikes_en.read_orfuzz, full=_TRAIN),
            _spec("red_instruct_harmful_questions", added_prompts.read_red_instruct_harmful_questions, full=_TRAIN),
            _spec("jade_db_zh", added_prompts.read_jade_db_zh, full=_TRAIN),
            _spec("rtp_lx", added_prompts.read_rtp_lx, full=_TRAIN),
            # Answers only (read by stream_heads.responses).
            _spec("diasafety", None, train=_TRAIN, val=_TRAIN, test=_TRAIN),
            _spec("gptfuzz_labeled_responses", None, train=_TRAIN, evaluate=_TRAIN),
            _spec("safetext", None, full=_TRAIN),
            _spec("latent_jailbreak", None, full=_TRAIN),
            _spec("safety_tuned_llamas", None, full=_TRAIN),
        )
    }
)

TRAINING_SETS: tuple[str, ...] = tuple(
    name for name, spec in DATASETS.items() if spec.reader is not None and spec.splits_for(_TRAIN)
)
"""Every dataset with prompts that may be trained on (the default prompt corpus of both training commands)."""

ANSWER_ONLY_SETS: tuple[str, ...] = tuple(
    name for name, spec in DATASETS.items() if spec.reader is None and spec.splits_for(_TRAIN)
)
"""Datasets of answers only that may be trained on (the stream heads' response paths read them)."""

ALL_TRAINING_SETS: tuple[str, ...] = tuple(name for name, spec in DATASETS.items() if spec.splits_for(_TRAIN))
"""Every dataset with a split that may be trained on, prompts or answers, in registry order."""

FIRST_BATCH_TRAINING_SETS: tuple[str, ...] = TRAINING_SETS[: TRAINING_SETS.index("russe_detox_2022") + 1]
"""The training sets registered before the second batch (every set listed above it in ``DATASETS``):
the corpus the shipped prefilter and stream heads were trained on. ``--sets first-batch`` selects it."""

SET_GROUPS: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {"all": ALL_TRAINING_SETS, "first-batch": FIRST_BATCH_TRAINING_SETS}
)
"""Names a training command's ``--sets`` accepts besides dataset names."""


def training_sets(names: Sequence[str]) -> tuple[str, ...]:
    """Expand ``names`` (training-set names and ``SET_GROUPS`` keys) into set names, in registry order.

    Raises:
        SplitViolation: a name is an evaluation-only set.
        KeyError: a name is neither a dataset nor a group.
    """
    wanted: set[str] = set()
    for name in names:
        if name in SET_GROUPS:
            wanted.update(SET_GROUPS[name])
        elif name in ALL_TRAINING_SETS:
            wanted.add(name)
        elif name in DATASETS:
            raise SplitViolation(f"{name} is for evaluation only; it cannot be trained on")
        else:
            raise KeyError(f"unknown training set {name!r}; known: {', '.join((*SET_GROUPS, *ALL_TRAINING_SETS))}")
    return tuple(name for name in ALL_TRAINING_SETS if name in wanted)


def sets_option(names: Sequence[str], universe: Sequence[str] = ALL_TRAINING_SETS) -> list[str]:
    """The ``--sets`` arguments that select ``names`` out of ``universe`` (the sets a command can read).

    None when ``names`` is all of ``universe`` (the default), a group's name when it is that group's
    part of ``universe``, else the names themselves.
    """
    chosen = set(names)
    if chosen == set(universe):
        return []
    for group, members in SET_GROUPS.items():
        if chosen == set(members) & set(universe):
            return ["--sets", group]
    return ["--sets", *(name for name in universe if name in chosen)]


EVALUATION_SETS: tuple[str, ...] = tuple(name for name, spec in DATASETS.items() if spec.splits_for(_EVAL))
"""Every dataset with an evaluation-only split, in report order."""


def dataset_root(explicit: Path | None = None) -> Path:
    """The datasets folder: ``explicit``, else ``shared/datasets`` in or beside the repository.

    Raises:
        DatasetMissing: no such folder exists.
    """
    repo = Path(__file__).resolve().parents[3]
    candidates = [explicit] if explicit is not None else [repo / "shared/datasets", repo.parent / "shared/datasets"]
    for candidate in candidates:
        if candidate is not None and candidate.is_dir():
            return candidate
    raise DatasetMissing(f"datasets folder not found (looked in {', '.join(map(str, candidates))})")


def load(name: str, purpose: Purpose, root: Path, splits: tuple[str, ...] | None = None) -> list[Record]:
    """Read the splits of ``name`` allowed for ``purpose`` (all of them unless ``splits`` names some).

    Raises:
        KeyError: unknown dataset, or one of answers only.
        SplitViolation: a requested split is not allowed for ``purpose``, or ``name`` has none that is.
        DatasetMissing: the dataset folder is absent.
    """
    spec = DATASETS.get(name)
    if spec is None:
        raise KeyError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}")
    wanted = spec.splits_for(purpose) if splits is None else splits
    if not wanted:
        raise SplitViolation(f"{name} has no split that may be used for {purpose.value}")
    for split in wanted:
        allowed = spec.splits.get(split)
        if allowed is None:
            raise KeyError(f"{name} has no split {split!r}; it has {', '.join(spec.splits)}")
        if allowed is not purpose:
            raise SplitViolation(f"{name}/{split} is for {allowed.value} only; refusing to read it for {purpose.value}")
    if spec.reader is None:
        raise KeyError(f"{name} holds answers only, no prompts (stream_heads.responses.load_responses reads them)")
    folder = root / name
    if not folder.is_dir():
        raise DatasetMissing(f"dataset folder {folder} is missing")
    reader = spec.reader
    return [record for split in wanted for record in reader(folder, split)]
