"""The notify use cases: alerts from events, alerts by hand, and their life cycle.

The only door into the service's logic and data: the consumer and the servicer call
it; it asks the domain what to do and the store to keep it. Every use case works in one
tenant (its first argument: the caller's `principal.tenant`, or the event's
`student.tenant`); cohorts and students are looked up and stored within it.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from services.kit.errors import Aborted, FailedPrecondition, NotFound
from services.notify.domain.model import (
    Alert,
    AlertFilter,
    IllegalTransitionError,
    Intervention,
    Signal,
    StaleEtagError,
    acknowledge,
    flag,
    merge,
    open_alert,
    resolve,
)
from services.notify.store import AlertStore, AlertTransaction
from services.notify.updates import UpdateRow

log = logging.getLogger("learnflow.notify")

# A student no cohort knows: only admins see these alerts.
NO_COHORT = "unassigned"


@dataclass(frozen=True, slots=True)
class Detection:
    """What one event means: the tenant it belongs to, its idempotency key and the
    signals it carries (none for most mastery changes)."""

    tenant: str
    source: str
    event_id: str
    signals: Sequence[Signal]


def new_alert_id() -> str:
    return uuid.uuid4().hex


class NotifyEngine:
    def __init__(
        self,
        store: AlertStore,
        cohort_of: Callable[[str, str], str | None],
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        announce: Callable[[Alert], UpdateRow] | None = None,
    ) -> None:
        self._store = store
        self._cohort_of = cohort_of
        self._clock = clock
        # The live update an alert change makes (its teachers' streams); None: none.
        self._announce = announce

    def _announced(self, tx: AlertTransaction, alert: Alert) -> Alert:
        if self._announce is not None:
            tx.announce(self._announce(alert))
        return alert

    # -- from events ----------------------------------------------------------------

    def ingest(self, detections: Sequence[Detection]) -> list[Alert]:
        """Apply a batch: each event once, each signal opening an alert or extending its
        episode's open one, one transaction per tenant the batch holds (in the order
        each tenant first appears; a tenant's events in batch order). Returns the alerts
        made or changed."""
        by_tenant: dict[str, list[Detection]] = {}
        for detection in detections:
            by_tenant.setdefault(detection.tenant, []).append(detection)
        touched: list[Alert] = []
        for tenant, group in by_tenant.items():
            touched += self._ingest(tenant, group)
        return touched

    def _ingest(self, tenant: str, detections: Sequence[Detection]) -> list[Alert]:
        cohorts = {
            s.student_id: self._cohort(tenant, s) for d in detections for s in d.signals
        }  # the roster is read outside the transaction
        touched: list[Alert] = []
        with self._store.transaction(tenant, students=cohorts) as tx:
            for detection in detections:
                if not tx.claim(detection.source, detection.event_id):
                    continue  # a redelivery: applied before
                for signal in detection.signals:
                    alert = self._apply(
                        tx, tenant, signal, cohorts[signal.student_id], detection.source
                    )
                    if alert is not None:
                        touched.append(alert)
        return touched

    def _cohort(self, tenant: str, signal: Signal) -> str:
        return self._cohort_of(tenant, signal.student_id) or signal.cohort or NO_COHORT

    def _apply(
        self, tx: AlertTransaction, tenant: str, signal: Signal, cohort: str, source: str
    ) -> Alert | None:
        existing = tx.lock_open_episode(signal.episode_key)
        if existing is None:
            alert = open_alert(signal, alert_id=new_alert_id(), cohort=cohort, creator=source)
            tx.insert(alert)
            log.info(
                "alert opened",
                extra={
                    "tenant": tenant,
                    "alert": alert.alert_id,
                    "student": alert.student_id,
                    "kind": alert.kind,
                },
            )
            return self._announced(tx, alert)
        merged, added = merge(existing, signal, self._clock())
        if not added:
            return None
        tx.update(merged)
        return self._announced(tx, merged)

    # -- by hand ----------------------------------------------------------------------

    def create(self, tenant: str, intervention: Intervention) -> Alert:
        alert = flag(intervention, alert_id=new_alert_id(), now=self._clock())
        with self._store.transaction(tenant) as tx:
            tx.insert(alert)
            self._announced(tx, alert)
        return alert

    # -- reading ----------------------------------------------------------------------

    def get(self, tenant: str, cohort: str, alert_id: str) -> Alert:
        """Another tenant's alert is not found: it does not exist in this one."""
        alert = self._store.get(tenant, cohort, alert_id)
        if alert is None:
            name = f"cohorts/{cohort}/alerts/{alert_id}"
            raise NotFound(f"{name} does not exist", metadata={"name": name})
        return alert

    def list(
        self, tenant: str, query: AlertFilter, offset: int, limit: int
    ) -> tuple[list[Alert], int]:
        return self._store.list(tenant, query, offset, limit)

    # -- the life cycle ---------------------------------------------------------------

    def acknowledge(self, tenant: str, cohort: str, alert_id: str, *, by: str, etag: str) -> Alert:
        return self._change(
            tenant,
            cohort,
            alert_id,
            lambda a: acknowledge(a, by=by, now=self._clock(), etag=etag),
        )

    def resolve(
        self, tenant: str, cohort: str, alert_id: str, *, by: str, note: str, etag: str
    ) -> Alert:
        return self._change(
            tenant,
            cohort,
            alert_id,
            lambda a: resolve(a, by=by, now=self._clock(), note=note, etag=etag),
        )

    def _change(
        self, tenant: str, cohort: str, alert_id: str, change: Callable[[Alert], Alert]
    ) -> Alert:
        name = f"cohorts/{cohort}/alerts/{alert_id}"
        with self._store.transaction(tenant) as tx:
            current = tx.lock(cohort, alert_id)  # a concurrent change waits for this one
            if current is None:
                raise NotFound(f"{name} does not exist", metadata={"name": name})
            try:
                changed = change(current)
            except StaleEtagError as exc:
                raise Aborted(str(exc), metadata={"name": name, "etag": current.etag}) from None
            except IllegalTransitionError as exc:
                raise FailedPrecondition(
                    str(exc), metadata={"name": name, "state": current.state.name}
                ) from None
            tx.update(changed)
            self._announced(tx, changed)
        return changed
