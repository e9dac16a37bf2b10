"""Retention: activity older than the window is purged (issue 14; docs/adr/0012).

Each service that keeps activity says how to purge one tenant's (`Purge`, from its
`retention(runtime)`); the job (services/retention.py) runs them for every tenant the
roster knows. A purge keeps what history and recalculation need (the mastery
service folds purged evidence into its baseline) and is idempotent: run again with the
same clock, it deletes nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime, timedelta

from services.kit.config import Settings

# Purge one tenant's activity as of `now`: rows (or evidence) purged, per kind.
Purge = Callable[[str, datetime], Mapping[str, int]]
# Delete one tenant's rows made before a moment: rows deleted, per kind.
DeleteBefore = Callable[[str, datetime], Mapping[str, int]]


def window(settings: Settings) -> timedelta:
    """How far back activity is kept (RETENTION_DAYS)."""
    return timedelta(days=settings.retention_days)


def older_than_window(settings: Settings, delete_before: DeleteBefore) -> Purge:
    """The purge of a service whose activity is rows with a time: those older than the
    window go."""
    kept = window(settings)
    return lambda tenant, now: delete_before(tenant, now - kept)
