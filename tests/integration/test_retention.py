"""The retention job (issue 14) on the mesh's real Postgres: a school's activity older
than the window is purged from every service that keeps it, open alerts stay, mastery
is unchanged, and a second run purges nothing. The mastery store's own guarantee (a
rebuild after a purge gives the same mastery and history) is in
tests/integration/test_mastery_rules.py. The command itself runs as a CronJob would."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta

import grpc
import pytest

from services.kit.config import Settings
from services.kit.runtime import Runtime
from services.mastery.main import MIGRATIONS as MASTERY_MIGRATIONS
from services.mastery.store import MasteryStore
from services.retention import RETAINING_SERVICES, purge_everything
from tests.conftest import MintToken, wait_for
from tests.integration.test_erasure import COHORT, leave_data_everywhere, rows_naming
from tests.integration.test_mastery import Events
from tests.integration.test_mastery_rules import no_messages, stored

pytestmark = pytest.mark.integration


def test_old_activity_is_purged_once_and_mastery_stays(
    channels: dict[str, grpc.Channel],
    events: Events,
    runtime: Runtime,
    settings: Settings,
    mint_token: MintToken,
) -> None:
    assert settings.database_url
    tenant = f"retain-{uuid.uuid4().hex[:6]}"
    student = f"old-{uuid.uuid4().hex[:8]}"
    token = mint_token(student, "student", [COHORT], tenant=tenant)
    leave_data_everywhere(channels, events, token, student, tenant)
    activity = {
        "mastery.evidence",
        "exercise.submissions",
        "debug.diagnoses",
        "debug.error_occurrences",
        "review.code_reviews",
        "notify.alerts",
    }

    def spread() -> dict[str, int] | None:
        found = rows_naming(settings.database_url or "", tenant, student)
        return found if activity <= set(found) else None

    wait_for(spread, timeout=60, what="the student's activity in every service")
    store = MasteryStore(runtime.database("mastery", MASTERY_MIGRATIONS))
    before = stored(store, "mastery_current", [student], tenant)
    assert before
    assert tenant in runtime.roster.tenants()

    # 91 days on, all of it is older than the 90-day window.
    later = datetime.now(UTC) + timedelta(days=91)
    report = purge_everything(runtime, later, tenants=[tenant])
    assert report["mastery"]["evidence"] >= 1
    assert report["exercise"]["submissions"] >= 1
    assert report["debug"]["diagnoses"] >= 1
    assert report["review"]["code_reviews"] >= 1
    assert report["notify"]["alerts"] == 0  # the struggle alert is still open
    left = rows_naming(settings.database_url, tenant, student)
    assert activity - set(left) == activity - {"notify.alerts"}
    assert "mastery.baseline_exercises" in left  # what recalculation needs
    # Purging again purges nothing; the student's mastery is what it was, and what a
    # recalculation from the baseline (all that is left) gives.
    again = purge_everything(runtime, later, tenants=[tenant])
    assert {s: sum(kinds.values()) for s, kinds in again.items()} == dict.fromkeys(again, 0)
    assert stored(store, "mastery_current", [student], tenant) == before
    assert store.recalculate(tenant, [student], datetime.now(UTC), no_messages) == 0
    assert stored(store, "mastery_current", [student], tenant) == before


def test_the_purge_command_runs_once_and_reports_every_service(settings: Settings) -> None:
    """`learnflow purge`, as the CronJob runs it, against the real infrastructure."""
    done = subprocess.run(
        [sys.executable, "-m", "services.cli", "purge"],
        env={**os.environ, "JWKS_PATH": str(settings.jwks_path), "LOG_LEVEL": "WARNING"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert set(report) == {*RETAINING_SERVICES, "exports"}
