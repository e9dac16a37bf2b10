"""A mastery consumer process for the crash test: `crash` mode dies (os._exit) right
after the database transaction of its first batch commits and before the Kafka offset
commit; `normal` mode consumes until it has handled `expected` events, then exits 0.

    python tests/integration/crash_consumer.py <crash|normal> <topic> <group> <expected>
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from services.kit.bus import ConsumerLoop, Envelope
from services.kit.config import load_settings
from services.kit.runtime import Runtime
from services.mastery.consumer import to_domain
from services.mastery.engine import MasteryEngine
from services.mastery.main import MIGRATIONS
from services.mastery.publisher import OutboxSender, encode_changes
from services.mastery.store import MasteryStore


def main() -> int:
    mode, topic, group, expected = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    runtime = Runtime(load_settings())
    bus = runtime.bus
    engine = MasteryEngine(
        MasteryStore(runtime.database("mastery", MIGRATIONS)),
        runtime.cache,
        encode_changes,
        OutboxSender(bus),
    )
    handled = 0

    def handle(batch: Sequence[Envelope]) -> None:
        nonlocal handled
        engine.ingest([to_domain(e) for e in batch])
        handled += len(batch)
        if mode == "crash":
            os._exit(17)  # the kill: database committed, Kafka offset not

    loop = ConsumerLoop(bus, group_id=group, topics=[topic], handler=handle, batch_size=1000)
    loop.start()
    deadline = time.monotonic() + 60
    while handled < expected and time.monotonic() < deadline:
        time.sleep(0.05)
    loop.stop()
    runtime.close()
    print(f"handled {handled}")
    return 0 if handled >= expected else 1


if __name__ == "__main__":
    raise SystemExit(main())
