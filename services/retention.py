"""The retention job (issue 14; docs/adr/0012): every tenant's activity older than
RETENTION_DAYS is purged, by each service that keeps activity (its `retention` in
`services/<service>/main.py`), and the kit's expired export parts.

`learnflow purge` runs it once (a Kubernetes CronJob) or every
RETENTION_INTERVAL_HOURS (`--every`, the compose file); the run command runs it in a
thread of its own. Idempotent: a second run with the same clock purges nothing.
"""

from __future__ import annotations

import importlib
import logging
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from services.kit.retention import Purge
from services.kit.runtime import Runtime

log = logging.getLogger("learnflow.retention")

# The services that keep activity to purge; each defines `retention(runtime) -> Purge`.
RETAINING_SERVICES = ("mastery", "debug", "exercise", "review", "notify")

Report = dict[str, Counter[str]]


def purges(runtime: Runtime) -> dict[str, Purge]:
    purge_of: dict[str, Purge] = {}
    for service in RETAINING_SERVICES:
        retention: Callable[[Runtime], Purge] = importlib.import_module(
            f"services.{service}.main"
        ).retention
        purge_of[service] = retention(runtime)
    return purge_of


def purge_everything(
    runtime: Runtime,
    now: datetime | None = None,
    *,
    purge_of: dict[str, Purge] | None = None,
    tenants: Sequence[str] | None = None,
    stopping: Callable[[], bool] = lambda: False,
) -> Report:
    """Purge old activity of every tenant the roster knows (or of `tenants`); what was
    purged, per service and kind. Between tenants it stops early when `stopping` says
    so (the process is shutting down; the next run carries on)."""
    now = now or datetime.now(UTC)
    purge_of = purge_of if purge_of is not None else purges(runtime)
    report: Report = {service: Counter() for service in (*purge_of, "exports")}
    for tenant in runtime.roster.tenants() if tenants is None else tenants:
        if stopping():
            break
        for service, purge in purge_of.items():
            report[service].update(purge(tenant, now))
        report["exports"]["export_parts"] += runtime.export_parts.purge_expired(tenant)
    log.info(
        "retention job done",
        extra={"purged": {s: dict(kinds) for s, kinds in report.items()}},
    )
    return report


class RetentionSchedule:
    """The job every `interval_seconds` on a thread of its own, first at start; a failed
    run is logged and tried again at the next."""

    def __init__(self, runtime: Runtime, interval_seconds: float) -> None:
        self._runtime = runtime
        self._interval = interval_seconds
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="retention", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop after the tenant being purged (each is one short transaction per service
        and chunk of students), before the adapters it uses close."""
        self._stop.set()
        self._thread.join(timeout=30.0)

    def _run(self) -> None:
        purge_of: dict[str, Purge] | None = None
        while not self._stop.is_set():
            try:
                purge_of = purge_of or purges(self._runtime)
                purge_everything(self._runtime, purge_of=purge_of, stopping=self._stop.is_set)
            except Exception:
                log.exception("retention job failed; retrying at the next interval")
            self._stop.wait(self._interval)
