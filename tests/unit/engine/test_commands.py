"""``streamwarden engine ...`` and ``streamwarden bench engine`` through the real CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from workers.cli import main


def test_make_and_inspect_a_test_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "ckpt"
    assert main(["engine", "make-test-checkpoint", "--out", str(out), "--model-type", "llama"]) == 0
    assert "random-weight TEST checkpoint" in capsys.readouterr().out
    assert main(["engine", "inspect", str(out), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["valid"] and summary["test_checkpoint"]
    assert summary["architecture"] == "LlamaForGuardModel" and summary["model_type"] == "llama"
    assert summary["kv_bytes_per_token_bf16"] == 2 * 2 * 2 * 16 * 2
    assert summary["response_risk_order"] == ["safe", "unsafe", "controversial"]
    assert summary["query_categories"][-1] == "Jailbreak"
    # Refuses to overwrite.
    assert main(["engine", "make-test-checkpoint", "--out", str(out)]) == 2


def test_inspect_reports_the_reason_of_a_bad_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "ckpt"
    main(["engine", "make-test-checkpoint", "--out", str(out)])
    config = json.loads((out / "config.json").read_text())
    del config["query_category_map"]
    (out / "config.json").write_text(json.dumps(config))
    capsys.readouterr()
    assert main(["engine", "inspect", str(out), "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["valid"] is False and "config lacks query_category_map" in report["error"]


def test_bench_engine_writes_its_record_and_plot(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = [
        "bench", "engine", "--size", "tiny", "--device", "cpu", "--attention", "paged,padded",
        "--concurrency", "1,3", "--answer-tokens", "12", "--chunk-tokens", "4", "--prompt-tokens", "6",
        "--reference-tokens", "4", "--threads", "1", "--dtype", "float32", "--out-dir", str(tmp_path),
    ]  # fmt: skip
    assert main(args) == 0
    record = json.loads((tmp_path / "engine_bench_cpu-tiny.json").read_text())
    assert (tmp_path / "engine_bench_cpu-tiny.png").stat().st_size > 10_000
    assert record["kv_bytes_per_token"] == 2 * 2 * 2 * 16 * 4
    assert record["reference"]["tokens"] == 4 and record["reference"]["tokens_per_s"] > 0
    points = {(p["attention"], p["concurrency"]): p for p in record["points"]}
    assert set(points) == {("paged", 1), ("paged", 3), ("padded", 1), ("padded", 3)}
    for point in points.values():
        assert point["answer_tokens"] == point["concurrency"] * 12
        assert point["ratio_vs_reference"] == pytest.approx(point["tokens_per_s"] / record["reference"]["tokens_per_s"])
        assert point["chunk_p99_ms"] >= point["chunk_p50_ms"] > 0
    assert points[("paged", 3)]["rows_per_forward"] > 1  # conversations share forwards
    assert record["config"]["command"].startswith("streamwarden ")
    assert "x ref" in capsys.readouterr().out
