"""Which dataset split may be used for what, enforced at the one place every loader goes through.

The split follows ``shared/datasets/README.md``: evaluation-only sets (and the test split of
ToxicChat, HarmBench and COLD) are never read for training or threshold selection. ``load`` raises
``SplitViolation`` when asked to; there is no flag to override it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

from workers.guards.datasets import benchmarks_en, chinese, multilingual, redteam_en, russian
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
    """A dataset folder, its reader and the purpose of each of its splits."""

    name: str
    reader: Reader
    splits: Mapping[str, Purpose]

    def splits_for(self, purpose: Purpose) -> tuple[str, ...]:
        return tuple(split for split, allowed in self.splits.items() if allowed is purpose)


def _spec(name: str, reader: Reader, **splits: Purpose) -> DatasetSpec:
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
        )
    }
)

TRAINING_SETS: tuple[str, ...] = tuple(name for name, spec in DATASETS.items() if spec.splits_for(_TRAIN))
"""Every dataset with a split that may be trained on."""

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
        KeyError: unknown dataset.
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
    folder = root / name
    if not folder.is_dir():
        raise DatasetMissing(f"dataset folder {folder} is missing")
    return [record for split in wanted for record in spec.reader(folder, split)]
