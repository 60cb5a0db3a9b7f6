"""JSON logs: one object per record, with the coordinates of the record a line is about."""

from __future__ import annotations

import io
import json
import logging

from workers.logs import json_formatter
from workers.moderation.delivery import Delivery


def _logger(stream: io.StringIO) -> logging.Logger:
    handler = logging.StreamHandler(stream)
    handler.setFormatter(json_formatter())
    logger = logging.getLogger(f"test-json-{id(stream)}")
    logger.handlers = [handler]
    logger.propagate = False
    logger.setLevel(logging.INFO)
    return logger


def test_a_json_record_carries_the_delivery_coordinates() -> None:
    stream = io.StringIO()
    delivery = Delivery("guard.tokens", 3, 1234, b"c1", b"{}", received=0.0)
    _logger(stream).warning("dead-lettering %s: %s", "x", "bad", extra=delivery.log_extra("c1", "m1"))
    record = json.loads(stream.getvalue())
    assert record["message"] == "dead-lettering x: bad"
    assert record["level"] == "WARNING" and record["logger"].startswith("test-json-")
    assert (record["kafka_topic"], record["kafka_partition"], record["kafka_offset"]) == ("guard.tokens", 3, 1234)
    assert (record["conversation_id"], record["message_id"]) == ("c1", "m1")
    assert "T" in record["ts"]


def test_absent_ids_are_left_out_and_exceptions_are_kept() -> None:
    stream = io.StringIO()
    delivery = Delivery("guard.prompts", 0, 7, None, b"", received=0.0)
    try:
        raise ValueError("broken checkpoint")
    except ValueError:
        _logger(stream).exception("the guard failed", extra=delivery.log_extra())
    record = json.loads(stream.getvalue())
    assert "conversation_id" not in record and "message_id" not in record
    assert record["kafka_offset"] == 7
    assert "ValueError: broken checkpoint" in record["exc_info"]


def test_one_line_per_record() -> None:
    stream = io.StringIO()
    logger = _logger(stream)
    logger.info("first\nwith a newline")
    logger.info("second")
    lines = stream.getvalue().splitlines()
    assert [json.loads(line)["message"] for line in lines] == ["first\nwith a newline", "second"]
