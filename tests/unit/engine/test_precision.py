"""``auto`` precision and the bfloat16 engine against float32.

``engine.dtype: auto`` is bfloat16 where the CPU has bfloat16 instructions. Bound against
float32, through the real scheduler on the tiny test model: no class probability differs by more
than ``PROB_BOUND`` (``docs/benchmarks.md`` states the same bound and the shipped model's measured
difference; ``docs/quality.md`` its verdicts on the evaluation sets).
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from tests.unit.engine.harness import max_prob_diff
from workers.engine import precision
from workers.engine.model import GuardModel
from workers.engine.runner import resolve_dtype

PROB_BOUND = 0.05
"""Largest class-probability difference bfloat16 may make against float32 (risk and category)."""


def test_bfloat16_scores_stay_within_the_bound_of_float32(tiny_model: GuardModel) -> None:
    bf16 = copy.deepcopy(tiny_model).to(torch.bfloat16)
    worst = max(max_prob_diff(bf16, tiny_model, seed) for seed in range(3))
    assert 0.0 < worst <= PROB_BOUND  # above zero: it really computed in bfloat16


def test_cpu_flags_are_read_from_cpuinfo(tmp_path: Path) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_bf16\n\nprocessor\t: 1\nflags\t\t: fpu\n")
    assert precision.cpu_flags(cpuinfo) == {"fpu", "avx2", "avx512f", "avx512_bf16"}
    assert precision.cpu_flags(tmp_path / "missing") == frozenset()


@pytest.mark.parametrize(("native", "want"), [(True, torch.bfloat16), (False, torch.float32)])
def test_auto_is_bfloat16_only_on_cpus_that_compute_it_natively(
    monkeypatch: pytest.MonkeyPatch, native: bool, want: torch.dtype
) -> None:
    monkeypatch.setattr(precision, "cpu_has_native_bfloat16", lambda: native)
    assert resolve_dtype("auto", torch.device("cpu")) == want
    assert resolve_dtype("float32", torch.device("cpu")) == torch.float32
    assert resolve_dtype("bfloat16", torch.device("cpu")) == torch.bfloat16
