"""Batch recalculation as a long-running operation (AIP-151), in a background thread.

Students are processed in chunks, each in its own transaction (rebuilt from their
evidence), two at a time; progress goes to the operation's metadata after every chunk,
and a cancellation request is honoured between chunks.
"""

from __future__ import annotations

import itertools
import logging
import threading
import uuid
from collections import deque
from concurrent import futures
from datetime import UTC, datetime

from learnflow.mastery.v1 import mastery_pb2

from services.mastery.convert import packed, timestamp
from services.mastery.engine import MasteryEngine

log = logging.getLogger("learnflow.mastery.recalculation")

CHUNK = 1000
WORKERS = 2


class Recalculations:
    def __init__(self, engine: MasteryEngine, chunk_size: int = CHUNK) -> None:
        self._engine = engine
        self._chunk = chunk_size
        self._threads: list[threading.Thread] = []

    def start(self, tenant: str, cohort: str | None, created_by: str) -> str:
        """Start recalculating `cohort` (None: every student) of `tenant`."""
        name = f"operations/recalculate-{uuid.uuid4().hex}"
        started = datetime.now(UTC)
        ids = self._engine.student_ids(tenant, cohort)
        metadata = mastery_pb2.RecalculateMasteryMetadata(
            total_students=len(ids), start_time=timestamp(started), update_time=timestamp(started)
        )
        self._engine.create_operation(tenant, name, created_by, packed(metadata))
        thread = threading.Thread(
            target=self._run,
            args=(tenant, name, ids, metadata),
            name=f"recalc-{name[-8:]}",
            daemon=True,
        )
        self._threads = [t for t in self._threads if t.is_alive()] + [thread]
        thread.start()
        return name

    def _run(
        self,
        tenant: str,
        name: str,
        ids: list[str],
        metadata: mastery_pb2.RecalculateMasteryMetadata,
    ) -> None:
        engine = self._engine
        chunks = [ids[offset : offset + self._chunk] for offset in range(0, len(ids), self._chunk)]
        changed = processed = 0
        try:
            # WORKERS chunks at a time: while one waits on Postgres another computes.
            # Progress is reported as chunks finish, in order; after a cancellation only
            # the chunks already running finish.
            with futures.ThreadPoolExecutor(WORKERS, thread_name_prefix="recalc") as pool:
                running: deque[tuple[list[str], futures.Future[int]]] = deque()
                waiting = iter(chunks)
                for chunk in itertools.islice(waiting, WORKERS):
                    running.append((chunk, pool.submit(engine.recalculate, tenant, chunk)))
                cancelled = False
                while running:
                    chunk, done = running.popleft()
                    changed += done.result()
                    processed += len(chunk)
                    metadata.processed_students = processed
                    metadata.update_time.CopyFrom(timestamp(datetime.now(UTC)))
                    if not cancelled and engine.update_operation(
                        tenant, name, metadata=packed(metadata)
                    ):
                        cancelled = metadata.cancel_requested = True
                    following = None if cancelled else next(waiting, None)
                    if following is not None:
                        running.append(
                            (following, pool.submit(engine.recalculate, tenant, following))
                        )
            if cancelled:
                engine.update_operation(
                    tenant, name, metadata=packed(metadata), done=True, error=(1, "cancelled")
                )
                log.info("recalculation cancelled", extra={"operation": name})
                return
            response = mastery_pb2.RecalculateMasteryResponse(
                processed_students=len(ids),
                changed_students=changed,
                end_time=timestamp(datetime.now(UTC)),
            )
            engine.update_operation(
                tenant, name, metadata=packed(metadata), done=True, response=packed(response)
            )
            log.info(
                "recalculation done",
                extra={"operation": name, "students": len(ids), "changed": changed},
            )
        except Exception as exc:  # the operation records the failure
            log.exception("recalculation failed", extra={"operation": name})
            engine.update_operation(
                tenant, name, metadata=packed(metadata), done=True, error=(13, str(exc))
            )

    def wait(self, timeout: float) -> None:
        for thread in self._threads:
            thread.join(timeout)
