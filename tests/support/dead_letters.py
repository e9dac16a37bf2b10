"""Reading dead letters back from a real broker in tests."""

from __future__ import annotations

import time
import uuid
from collections.abc import Collection

from confluent_kafka import Consumer

from services.kit.bus import decode_headers


def dead_letters(
    bootstrap: str,
    topic: str,
    event_ids: Collection[str],
    *,
    group: str | None = None,
    timeout: float = 30.0,
) -> dict[str, dict[str, str]]:
    """The headers of the dead letters on `topic` whose `ce_id` is one of `event_ids`
    (and, with `group`, that this consumer group wrote), read from the beginning until
    all are found or `timeout` passes."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"dlq-check-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    found: dict[str, dict[str, str]] = {}
    deadline = time.monotonic() + timeout
    try:
        while len(found) < len(event_ids) and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None or msg.error():
                continue
            headers = decode_headers(msg.headers())
            ours = group is None or headers.get("dlq_consumer_group") == group
            if ours and headers.get("ce_id") in event_ids:
                found[headers["ce_id"]] = headers
    finally:
        consumer.close()
    return found
