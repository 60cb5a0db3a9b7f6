"""Where a faust worker stands in its partitions, for the consumer-lag series of ``/metrics``.

Read from the metrics HTTP thread at scrape time: plain reads of the consumer's offset tables
(faust's committed and read offsets, aiokafka's cached highwater from the last fetch response), no
call into the consumer's event loop, so a scrape never waits on or disturbs consumption. The values
may be a fetch old, which is what a lag gauge scraped every few seconds needs.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import faust

from workers.metrics import PartitionPosition


def partition_positions(app: faust.App) -> Mapping[tuple[str, int], PartitionPosition]:
    """``(topic, partition) -> PartitionPosition`` for every partition assigned to ``app``'s
    consumer; empty before the consumer exists or while it has no assignment."""
    consumer: Any = app._consumer  # not ``app.consumer``: that property would create one
    if consumer is None:
        return {}
    try:
        assigned = list(consumer.assignment())
    except Exception:  # noqa: BLE001  # the consumer is not started or is being rebuilt: nothing to report
        return {}
    committed: Mapping[Any, int | None] = consumer._committed_offset
    read: Mapping[Any, int | None] = consumer._read_offset
    positions: dict[tuple[str, int], PartitionPosition] = {}
    for tp in assigned:
        try:
            highwater = consumer.highwater(tp)
        except Exception:  # noqa: BLE001  # a partition revoked between the two reads
            highwater = None
        last_read = read.get(tp)
        positions[(tp.topic, tp.partition)] = PartitionPosition(
            highwater=highwater,
            committed=committed.get(tp),
            # faust keeps the offset of the last record it handed to an agent
            read=None if last_read is None else last_read + 1,
        )
    return positions
