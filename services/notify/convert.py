"""Domain values to the wire (learnflow.notify.v1), at the edge."""

from __future__ import annotations

from datetime import datetime

from google.protobuf.timestamp_pb2 import Timestamp
from learnflow.notify.v1 import notify_pb2

from services.notify.domain.model import Alert, Evidence
from services.notify.updates import UpdateRow


def alert_name(cohort: str, alert_id: str) -> str:
    return f"cohorts/{cohort}/alerts/{alert_id}"


def _stamp(value: datetime | None) -> Timestamp | None:
    if value is None:
        return None
    stamp = Timestamp()
    stamp.FromDatetime(value)
    return stamp


def encode_evidence(item: Evidence) -> notify_pb2.Evidence:
    return notify_pb2.Evidence(
        type=int(item.type),  # type: ignore[arg-type]
        resource=item.resource,
        summary=item.summary,
        value=item.value,
        previous_value=item.previous_value,
        occur_time=_stamp(item.occur_time),
        event_source=item.event_source,
        event_id=item.event_id,
    )


def encode_alert(alert: Alert) -> notify_pb2.Alert:
    return notify_pb2.Alert(
        name=alert_name(alert.cohort, alert.alert_id),
        student=f"students/{alert.student_id}",
        cohort=f"cohorts/{alert.cohort}",
        kind=int(alert.kind),  # type: ignore[arg-type]
        severity=int(alert.severity),  # type: ignore[arg-type]
        title=alert.title,
        detail=alert.detail,
        state=int(alert.state),  # type: ignore[arg-type]
        acknowledged_by=alert.acknowledged_by,
        acknowledge_time=_stamp(alert.acknowledged_at),
        resolved_by=alert.resolved_by,
        resolve_time=_stamp(alert.resolved_at),
        resolution_note=alert.resolution_note,
        episode_id=alert.episode_id,
        create_time=_stamp(alert.created_at),
        update_time=_stamp(alert.updated_at),
        etag=alert.etag,
        evidence=[encode_evidence(e) for e in alert.evidence],
        creator=alert.creator,
    )


# -- live updates ----------------------------------------------------------------------


def alert_update(alert: Alert) -> UpdateRow:
    """The live update an alert change makes: for its cohort's teachers only."""
    update = notify_pb2.Update(alert=encode_alert(alert))
    return UpdateRow(student_id=None, cohort=alert.cohort, payload=update.SerializeToString())


def decode_update(seq: int, payload: bytes, created_at: datetime) -> notify_pb2.Update:
    """A logged update as subscribers get it: with its cursor and time (made once per
    update and shared by every stream it goes to; never changed afterwards)."""
    update = notify_pb2.Update.FromString(payload)
    update.cursor = encode_cursor(seq)
    update.create_time.FromDatetime(created_at)
    return update


def heartbeat(position: int, now: datetime) -> notify_pb2.Update:
    update = notify_pb2.Update(cursor=encode_cursor(position))
    update.heartbeat.send_time.FromDatetime(now)
    update.create_time.FromDatetime(now)
    return update


def encode_cursor(seq: int) -> str:
    return str(seq)
