"""``engine.quantize: int8`` against float32: the documented bound on every probability.

The quantised model runs the real scheduler and runner over random conversations (chunked
incremental scoring, evictions and rebuilds); each score is compared with the float32 model's
full-prefix forward. Bound: no class probability differs by more than ``PROB_BOUND``. Activations
are quantised per forward over the whole batch, so an int8 score also depends (within the bound)
on which other conversations share its forward: int8 verdicts are not bit-reproducible. The same
bound is what ``docs/benchmarks.md`` states for the int8 path.
"""

from __future__ import annotations

import copy

import pytest
import torch

from tests.unit.engine.harness import max_prob_diff
from workers.engine.model import GuardModel
from workers.engine.quantize import quantize_backbone

PROB_BOUND = 0.05
"""Largest class-probability difference int8 may make against float32 (risk and category)."""


def test_int8_scores_stay_within_the_bound_of_float32(tiny_model: GuardModel) -> None:
    quantised = quantize_backbone(copy.deepcopy(tiny_model), "int8")
    assert type(quantised.model.layers[0].mlp.up_proj).__name__ == "Linear"  # type: ignore[index,union-attr]
    assert "quantized" in type(quantised.model.layers[0].mlp.up_proj).__module__  # type: ignore[index,union-attr]
    worst = max(max_prob_diff(quantised, tiny_model, seed) for seed in range(3))
    assert worst <= PROB_BOUND
    assert worst > 0.0  # it is really quantised: a bound of exactly zero would mean nothing changed


def test_none_leaves_the_model_alone(tiny_model: GuardModel) -> None:
    assert quantize_backbone(tiny_model, "none") is tiny_model


def test_int8_refuses_what_it_cannot_quantise(tiny_model: GuardModel) -> None:
    with pytest.raises(ValueError, match="float32"):
        quantize_backbone(copy.deepcopy(tiny_model).to(torch.bfloat16), "int8")
