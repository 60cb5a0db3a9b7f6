"""``streamwarden engine make-test-checkpoint`` and ``streamwarden engine inspect``."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from workers.engine.testing import SIZES
from workers.settings import Settings

if TYPE_CHECKING:
    from typing import TypeAlias

    _Subparsers: TypeAlias = argparse._SubParsersAction[argparse.ArgumentParser]

logger = logging.getLogger(__name__)


def register(subparsers: _Subparsers) -> None:
    engine = subparsers.add_parser("engine", help="guard checkpoints: make a test one, inspect one")
    actions = engine.add_subparsers(dest="engine_action", required=True, metavar="ACTION")
    make = actions.add_parser(
        "make-test-checkpoint", help="write a RANDOM-WEIGHT test checkpoint in the Qwen3Guard-Stream format"
    )
    make.add_argument("--out", type=Path, required=True, help="directory to write")
    make.add_argument("--size", choices=SIZES, default="tiny")
    make.add_argument("--model-type", choices=("qwen3", "llama"), default="qwen3")
    make.add_argument("--seed", type=int, default=0)
    make.set_defaults(handler=_make_test_checkpoint)
    inspect = actions.add_parser("inspect", help="validate a checkpoint and summarise its config and tensors")
    inspect.add_argument("path", help="checkpoint directory or Hugging Face id in the local cache")
    inspect.add_argument("--json", action="store_true", help="machine-readable output")
    inspect.set_defaults(handler=_inspect)


def _make_test_checkpoint(args: argparse.Namespace, settings: Settings) -> int:
    from workers.engine.testing import make_test_checkpoint

    if args.out.exists() and any(args.out.iterdir()):
        logger.error("%s exists and is not empty", args.out)
        return 2
    path = make_test_checkpoint(args.out, size=args.size, seed=args.seed, model_type=args.model_type)
    sys.stdout.write(f"wrote random-weight TEST checkpoint {path}\n")
    return 0


def _inspect(args: argparse.Namespace, settings: Settings) -> int:
    from workers.engine.checkpoint import CheckpointError

    try:
        summary = inspect_checkpoint(args.path)
    except CheckpointError as exc:
        if args.json:
            json.dump({"valid": False, "error": str(exc)}, sys.stdout, indent=2)
            sys.stdout.write("\n")
        else:
            sys.stdout.write(f"invalid checkpoint: {exc}\n")
        return 1
    if args.json:
        json.dump(summary, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"checkpoint {summary['path']}", show_header=False)
    for key, value in summary.items():
        table.add_row(key, json.dumps(value) if isinstance(value, (list, dict)) else str(value))
    Console().print(table)
    return 0


def inspect_checkpoint(reference: str) -> dict[str, Any]:
    """Validate ``reference`` fully (config, labels, every tensor's shape) and summarise it.

    Test checkpoints are accepted here (and reported as such): inspecting loads no weights.

    Raises:
        CheckpointError: the checkpoint is malformed.
    """
    from workers.engine.checkpoint import open_checkpoint
    from workers.engine.kv import KVLayout
    from workers.engine.model import validate_checkpoint

    checkpoint = open_checkpoint(reference, allow_test_checkpoint=True, require_tokenizer=False)
    shapes = validate_checkpoint(checkpoint)
    backbone = checkpoint.config.backbone_config()
    labels = checkpoint.config.labels
    parameters = 0
    for shape in shapes.values():
        count = 1
        for size in shape:
            count *= size
        parameters += count
    return {
        "path": str(checkpoint.path),
        "model_id": checkpoint.model_id,
        "revision": checkpoint.revision,
        "test_checkpoint": checkpoint.is_test_checkpoint,
        "architecture": checkpoint.config.architecture,
        "model_type": checkpoint.config.model_type,
        "layers": backbone.num_hidden_layers,
        "hidden_size": backbone.hidden_size,
        "attention_heads": backbone.num_attention_heads,
        "kv_heads": getattr(backbone, "num_key_value_heads", backbone.num_attention_heads),
        "vocab_size": backbone.vocab_size,
        "max_positions": getattr(backbone, "max_position_embeddings", None),
        "guard_inner_size": checkpoint.config.guard_inner_size,
        "parameters": parameters,
        "tensors": len(shapes),
        "kv_bytes_per_token_bf16": KVLayout.from_config(backbone, dtype_bytes=2, page_size=1).bytes_per_token,
        "response_risk_order": [risk.value for risk in labels.response.risks],
        "response_categories": list(labels.response.categories),
        "query_categories": list(labels.query.categories),
        "tokenizer": checkpoint.has_tokenizer,
        "valid": True,
    }
