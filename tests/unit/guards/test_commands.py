"""The guard commands are registered next to the other modules' commands."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from workers.cli import build_parser
from workers.guards.commands import command_group


def test_train_eval_and_bench_parse() -> None:
    parser = build_parser()
    train = parser.parse_args(["train", "prefilter", "--out", "x", "--subset", "50", "--seed", "2"])
    assert (train.out, train.subset, train.seed) == (Path("x"), 50, 2)
    evaluate = parser.parse_args(["eval", "--guard", "cascade", "--sets", "xstest", "toxic_chat", "--limit", "9"])
    assert (evaluate.guard, evaluate.sets, evaluate.limit, evaluate.policy) == (
        "cascade",
        ["xstest", "toxic_chat"],
        9,
        "both",
    )
    assert parser.parse_args(["bench", "prefilter"]).handler.__name__ == "_bench_prefilter"
    with pytest.raises(SystemExit):
        parser.parse_args(["eval", "--guard", "prefilter", "--sets", "advbench"])  # a training set


def test_command_group_reuses_a_group_registered_earlier() -> None:
    parser = argparse.ArgumentParser()
    subparsers = parser.add_subparsers(dest="command")
    first = command_group(subparsers, "bench", "benchmarks")
    first.add_parser("engine")
    again = command_group(subparsers, "bench", "benchmarks")
    again.add_parser("prefilter")
    assert again is first
    assert parser.parse_args(["bench", "engine"]).bench_kind == "engine"


def test_cli_and_backends_import_no_heavy_modules() -> None:
    """torch, sentence-transformers and matplotlib load only when a command runs."""
    code = (
        "import sys, workers.guards.commands, workers.backends.prefilter, workers.backends.cascade, "
        "workers.guards.evaluation, workers.guards.report; "
        "print(sorted(m for m in ('torch', 'sentence_transformers', 'matplotlib') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
