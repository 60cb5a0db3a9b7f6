"""``streamwarden bench engine|pipeline``: the engine against the reference loop; the pipeline against a
bare Kafka relay."""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
import typing
from pathlib import Path
from typing import TYPE_CHECKING

from workers.engine.testing import SIZES
from workers.settings import EngineSettings, Settings

if TYPE_CHECKING:
    from typing import TypeAlias

    from rich.console import Console

    _Subparsers: TypeAlias = argparse._SubParsersAction[argparse.ArgumentParser]

logger = logging.getLogger(__name__)

ATTENTION_CHOICES: tuple[str, ...] = typing.get_args(EngineSettings.model_fields["attention"].annotation)


def register(subparsers: _Subparsers) -> None:
    bench = subparsers.add_parser("bench", help="benchmarks (ratios against a baseline measured in the same run)")
    kinds = bench.add_subparsers(dest="bench_kind", required=True, metavar="KIND")
    engine = kinds.add_parser(
        "engine", help="engine tokens/s and chunk latency vs. concurrency, against the reference loop"
    )
    engine.add_argument("--size", choices=SIZES, default="tiny", help="architecture, random weights in memory")
    engine.add_argument("--device", default=None, help="auto, cpu, cuda, cuda:N (default: engine.device)")
    engine.add_argument("--dtype", default=None, help="auto, float32, bfloat16, float16 (default: engine.dtype)")
    engine.add_argument(
        "--attention",
        default=None,
        help=f"comma-separated paths among {', '.join(ATTENTION_CHOICES)} (default: engine.attention)",
    )
    engine.add_argument("--concurrency", default="1,8,64,512", help="comma-separated conversation counts")
    engine.add_argument("--answer-tokens", type=int, default=512, help="answer length of every conversation")
    engine.add_argument("--chunk-tokens", type=int, default=16, help="tokens per streamed chunk")
    engine.add_argument("--prompt-tokens", type=int, default=128, help="prompt length of every conversation")
    engine.add_argument("--reference-tokens", type=int, default=64, help="tokens timed with the (slow) reference loop")
    engine.add_argument("--max-batch-tokens", type=int, default=8192, help="new tokens per forward, at most")
    engine.add_argument("--max-batch-rows", type=int, default=512, help="conversations per forward, at most")
    engine.add_argument(
        "--max-wait-ms", type=float, default=None, help="batching deadline (default: engine.max_wait_ms)"
    )
    engine.add_argument(
        "--kv-budget-gib", type=float, default=None, help="KV budget (default: fits every conversation)"
    )
    engine.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    engine.add_argument("--seed", type=int, default=0)
    engine.add_argument(
        "--checkpoint",
        default=None,
        help="a real checkpoint (directory, or 'default': the shipped guard) instead of --size",
    )
    engine.add_argument("--layers", type=int, default=None, help="keep only the model's first N decoder layers")
    engine.add_argument("--quantize", choices=("none", "int8"), default="none", help="as engine.quantize")
    engine.add_argument("--out-dir", type=Path, default=Path("docs"), help="where the JSON and PNG go")
    engine.set_defaults(handler=_bench_engine)
    pipeline = kinds.add_parser(
        "pipeline", help="chunk -> verdict latency and cut-off latency on a real Kafka and Redis, against a bare relay"
    )
    pipeline.add_argument(
        "--rates", default="250,500,750,1000", help="comma-separated offered chunks per second (all conversations)"
    )
    pipeline.add_argument("--conversations", type=int, default=100, help="conversations streaming at once")
    pipeline.add_argument("--duration", type=float, default=20.0, help="measured seconds (after the warm-up)")
    pipeline.add_argument("--warmup", type=float, default=5.0, help="seconds excluded from the statistics")
    pipeline.add_argument("--words-per-chunk", type=int, default=3, help="text per chunk")
    pipeline.add_argument("--unsafe-share", type=float, default=0.2, help="conversations that turn unsafe")
    pipeline.add_argument(
        "--guard",
        choices=("planted", "default"),
        default="planted",
        help="planted: the pipeline alone (tiny planted model, synthetic text); default: the guard a fresh "
        "install runs, on demo-like traffic (one word per chunk, mixed prompts), reporting its capacity",
    )
    pipeline.add_argument("--policy", choices=("strict", "loose"), default="loose", help="--guard default: policy")
    pipeline.add_argument(
        "--words-per-second",
        type=float,
        default=5.0,
        help="--guard default: streaming speed of each conversation (rate / this = conversations at once)",
    )
    pipeline.add_argument(
        "--max-prompt-words", type=int, default=300, help="--guard default: longest prompt (log-uniform lengths)"
    )
    pipeline.add_argument(
        "--set",
        dest="worker_settings",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="--guard default: a worker setting (dotted key), e.g. guard.checkpoint=DIR or engine.quantize=int8",
    )
    pipeline.add_argument("--partitions", type=int, default=8)
    pipeline.add_argument("--seed", type=int, default=0)
    pipeline.add_argument(
        "--repeat", type=int, default=1, help="run everything this many times, each on a fresh broker, Redis and worker"
    )
    pipeline.add_argument("--run-dir", type=Path, default=Path(".streamwarden/bench-pipeline"))
    pipeline.add_argument("--out", type=Path, default=Path("docs/pipeline_bench.json"), help="JSON (and PNG) result")
    pipeline.set_defaults(handler=_bench_pipeline)


def _bench_engine(args: argparse.Namespace, settings: Settings) -> int:
    from rich.console import Console

    from workers.bench.engine import BenchConfig, run_bench
    from workers.bench.report import result_table, write_json, write_plot

    attention = tuple(args.attention.split(",")) if args.attention else (settings.engine.attention,)
    unknown = [name for name in attention if name not in ATTENTION_CHOICES]
    if unknown:
        logger.error("unknown attention path %s; choose among %s", unknown[0], ", ".join(ATTENTION_CHOICES))
        return 2
    config = BenchConfig(
        size=args.size,
        device=args.device or settings.engine.device,
        dtype=args.dtype or settings.engine.dtype,
        attention=attention,
        concurrency=tuple(int(n) for n in args.concurrency.split(",")),
        answer_tokens=args.answer_tokens,
        chunk_tokens=args.chunk_tokens,
        prompt_tokens=args.prompt_tokens,
        reference_tokens=args.reference_tokens,
        max_batch_tokens=args.max_batch_tokens,
        max_batch_rows=args.max_batch_rows,
        max_wait_ms=settings.engine.max_wait_ms if args.max_wait_ms is None else args.max_wait_ms,
        page_size=settings.engine.page_size,
        kv_budget_bytes=None if args.kv_budget_gib is None else int(args.kv_budget_gib * 2**30),
        threads=args.threads,
        seed=args.seed,
        checkpoint=args.checkpoint,
        layers=args.layers,
        quantize=args.quantize,
    )
    result = run_bench(config)
    result.config["command"] = "streamwarden " + shlex.join(sys.argv[1:])
    console = Console()
    console.print(result_table(result))
    what = config.size if config.checkpoint is None else Path(config.checkpoint).name
    if config.layers is not None:
        what += f"-{config.layers}l"
    if config.quantize != "none":
        what += f"-{config.quantize}"
    stem = f"engine_bench_{result.config['device'].split(':')[0]}-{what}"
    json_path = write_json(result, args.out_dir / f"{stem}.json")
    plot_path = write_plot(result, args.out_dir / f"{stem}.png")
    console.print(f"KV bytes per token: {result.kv_bytes_per_token:,}; wrote {json_path} and {plot_path}")
    return 0


def _bench_pipeline(args: argparse.Namespace, settings: Settings) -> int:
    import asyncio

    from rich.console import Console

    from workers.bench.pipeline import Load, report, report_repeats, run_pipeline_bench

    console = Console()
    if args.guard == "default":
        return _bench_shipped(args, console)
    load = Load(
        rates=tuple(float(r) for r in args.rates.split(",")),
        conversations=args.conversations,
        duration_s=args.duration,
        warmup_s=args.warmup,
        words_per_chunk=args.words_per_chunk,
        unsafe_share=args.unsafe_share,
        seed=args.seed,
    )
    if args.repeat < 1:
        logger.error("--repeat must be at least 1, got %s", args.repeat)
        return 2
    from workers.infra.rundir import RunDirectory

    runs = []
    with RunDirectory(args.run_dir):
        for index in range(args.repeat):
            if args.repeat > 1:
                console.rule(f"run {index + 1} of {args.repeat}")
            run = run_pipeline_bench(load, run_dir=args.run_dir, console=console, partitions=args.partitions)
            results = asyncio.run(run)
            report(results, load, console, args.out if args.repeat == 1 else None)
            runs.append(results)
    if args.repeat > 1:
        report_repeats(runs, load, console, args.out)
    return 0


def _bench_shipped(args: argparse.Namespace, console: Console) -> int:
    import asyncio

    from workers.bench.shipped import ShippedLoad, report, run_shipped_bench

    settings: dict[str, str] = {}
    for item in args.worker_settings:
        key, sep, value = item.partition("=")
        if not sep or not key:
            logger.error("--set takes KEY=VALUE, got %r", item)
            return 2
        settings[key] = value
    load = ShippedLoad(
        rates=tuple(float(r) for r in args.rates.split(",")),
        words_per_s=args.words_per_second,
        duration_s=args.duration,
        warmup_s=args.warmup,
        unsafe_share=args.unsafe_share,
        max_prompt_words=args.max_prompt_words,
        policy=args.policy,
        seed=args.seed,
        worker_settings=settings,
    )
    from workers.infra.rundir import RunDirectory
    from workers.logs import log_to_file

    out = args.out if args.out != Path("docs/pipeline_bench.json") else Path("docs/shipped_bench.json")
    with RunDirectory(args.run_dir):
        log_path = log_to_file(args.run_dir / "bench.log")
        results = asyncio.run(
            run_shipped_bench(load, run_dir=args.run_dir, console=console, partitions=args.partitions)
        )
    report(results, load, console, out)
    console.print(f"[dim]logs: {log_path}[/]")
    return 0
