"""``streamwarden archive``: the compliance consumer that writes verdicts to Parquet.

Reads the verdicts topic as its own consumer group, drops re-emitted verdicts (same ``event_id``),
and writes one Parquet file per flush under ``<out>/date=YYYY-MM-DD/``. Offsets are committed only
after the file holding those verdicts is written, so a crash re-reads (and re-writes) at most the
last unflushed batch, never loses one.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from topics.events import VerdictEvent
from workers.client import VerdictConsumer

logger = logging.getLogger(__name__)

SCHEMA = pa.schema(
    [
        ("event_id", pa.string()),
        ("conversation_id", pa.string()),
        ("message_id", pa.string()),
        ("ts_ms", pa.int64()),
        ("stage", pa.string()),
        ("seq", pa.int64()),
        ("token_start", pa.int64()),
        ("token_end", pa.int64()),
        ("risk", pa.string()),
        ("category", pa.string()),
        ("p_safe", pa.float32()),
        ("p_controversial", pa.float32()),
        ("p_unsafe", pa.float32()),
        ("action", pa.string()),
        ("status", pa.string()),
        ("tier", pa.string()),
        ("model_id", pa.string()),
        ("model_revision", pa.string()),
        ("policy", pa.string()),
        ("policy_version", pa.int32()),
        ("worker_id", pa.string()),
        ("latency_ms", pa.float32()),
        ("flagged_token", pa.int64()),
    ]
)


def to_table(verdicts: Sequence[VerdictEvent]) -> pa.Table:
    """Verdicts as an Arrow table with ``SCHEMA``."""
    rows: list[dict[str, Any]] = []
    for v in verdicts:
        row = asdict(v)
        probs = row.pop("probs") or {}
        row["p_safe"] = probs.get("safe")
        row["p_controversial"] = probs.get("controversial")
        row["p_unsafe"] = probs.get("unsafe")
        rows.append({name: row.get(name) for name in SCHEMA.names})
    return pa.Table.from_pylist(rows, schema=SCHEMA)


def write_batch(out: Path, verdicts: Sequence[VerdictEvent]) -> Path:
    """Write one Parquet file for ``verdicts`` (all of one flush) and return its path."""
    day = time.strftime("%Y-%m-%d", time.gmtime(verdicts[0].ts_ms / 1000))
    directory = out / f"date={day}"
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"verdicts-{time.time_ns()}-{uuid.uuid4().hex[:6]}.parquet"
    tmp = path.with_suffix(".tmp")
    pq.write_table(to_table(verdicts), tmp, compression="zstd")
    tmp.rename(path)  # readers never see a half-written file
    return path


async def archive(
    bootstrap: str, prefix: str, out: Path, *, group_id: str, flush_every: int, flush_s: float, stop_after: int | None
) -> int:
    """Archive until cancelled (or until ``stop_after`` verdicts); returns how many were written."""
    written = 0
    pending: list[VerdictEvent] = []
    last_flush = time.monotonic()
    async with VerdictConsumer(bootstrap, group_id=group_id, topic_prefix=prefix) as consumer:
        async for batch in consumer.batches(timeout_ms=200):
            pending.extend(batch)
            due = len(pending) >= flush_every or (pending and time.monotonic() - last_flush >= flush_s)
            if due:
                path = await asyncio.to_thread(write_batch, out, pending)
                await consumer.commit()  # only now: everything read so far is on disk
                written += len(pending)
                logger.info("archived %d verdicts to %s", len(pending), path)
                pending, last_flush = [], time.monotonic()
            if stop_after is not None and written >= stop_after:
                break
    return written
