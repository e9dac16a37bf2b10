"""Retention: activity older than the window is purged (issue 14; docs/adr/0012).

Each service that keeps activity says how to purge one tenant's (`Purge`, from its
`retention(runtime)`); the job (services/retention.py) runs them for every tenant the
roster knows. A purge keeps what history and recalculation need (the mastery
service folds purged evidence into its baseline) and is idempotent: run again with the
same clock, it deletes nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime

# Purge one tenant's activity as of `now`: rows (or evidence) purged, per kind.
Purge = Callable[[str, datetime], Mapping[str, int]]
