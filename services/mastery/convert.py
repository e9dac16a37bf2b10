"""Domain values -> learnflow.mastery.v1 messages."""

from __future__ import annotations

import hashlib
from datetime import date, datetime

from google.protobuf import any_pb2
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from google.type import date_pb2
from learnflow.mastery.v1 import mastery_pb2

from services.kit.consent import ConsentRecord, Decision, Purpose, Source
from services.mastery.domain.history import HistoryPoint, Summary
from services.mastery.domain.model import OVERALL, Component, Components, Mastery, streak
from services.mastery.domain.records import (
    CohortRow,
    EvidenceCounts,
    EvidenceRow,
    MasteryView,
    Profile,
    Student,
)


def packed(message: Message) -> bytes:
    """`message` in a google.protobuf.Any, serialised: how an operation's metadata and
    response are stored."""
    wrapper = any_pb2.Any()
    wrapper.Pack(message)
    return wrapper.SerializeToString()


def unpack(raw: bytes, message: Message) -> None:
    """Fill `message` from what `packed` stored."""
    any_pb2.Any.FromString(raw).Unpack(message)


def timestamp(moment: datetime) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(moment)
    return ts


def proto_date(day: date) -> date_pb2.Date:
    return date_pb2.Date(year=day.year, month=day.month, day=day.day)


def components(c: Components) -> mastery_pb2.Components:
    return mastery_pb2.Components(
        completion=c.completion, quiz=c.quiz, quality=c.quality, consistency=c.consistency
    )


def evidence(row: EvidenceRow) -> mastery_pb2.Evidence:
    return mastery_pb2.Evidence(
        source=row.source,
        event_id=row.event_id,
        type=row.event_type,
        component=row.component,  # type: ignore[arg-type]
        topic=row.topic,  # type: ignore[arg-type]
        subject=row.subject,
        value=row.value,
        occur_time=timestamp(row.occur_time),
    )


def _component_evidence(counts: EvidenceCounts | None) -> mastery_pb2.ComponentEvidence:
    if counts is None:
        return mastery_pb2.ComponentEvidence()
    return mastery_pb2.ComponentEvidence(
        event_count=counts.count, latest=[evidence(r) for r in counts.latest]
    )


def evidence_summary(
    view: MasteryView, topic: int, active_days: int
) -> mastery_pb2.EvidenceSummary:
    def of(component: Component) -> mastery_pb2.ComponentEvidence:
        return _component_evidence(view.evidence.get((topic, int(component))))

    return mastery_pb2.EvidenceSummary(
        completion=of(Component.COMPLETION),
        quiz=of(Component.QUIZ),
        quality=of(Component.QUALITY),
        active_days_last_30=active_days,
    )


def cohort_name(cohort: str) -> str:
    return f"cohorts/{cohort}" if cohort else ""


def mastery_name(student_id: str) -> str:
    return f"students/{student_id}/mastery"


def _topics(topics: dict[int, Mastery], view: MasteryView | None) -> list[mastery_pb2.TopicMastery]:
    result = []
    for topic in sorted(topics):
        m = topics[topic]
        item = mastery_pb2.TopicMastery(
            topic=topic,  # type: ignore[arg-type]
            score=m.score,
            band=int(m.band),  # type: ignore[arg-type]
            components=components(m.components),
        )
        if view is not None:
            days = round(m.components.consistency * 30)
            item.evidence.CopyFrom(evidence_summary(view, topic, days))
        result.append(item)
    return result


def mastery(view: MasteryView) -> mastery_pb2.Mastery:
    overall = view.mastery.overall
    run = streak(view.active_days, view.today)
    message = mastery_pb2.Mastery(
        name=mastery_name(view.student.student_id),
        score=overall.score,
        band=int(overall.band),  # type: ignore[arg-type]
        components=components(overall.components),
        topics=_topics(dict(view.mastery.topics), view),
        streak=mastery_pb2.Streak(
            current_days=run.current_days,
            longest_days=run.longest_days,
            time_zone=view.student.time_zone,
        ),
        evidence=evidence_summary(view, OVERALL, view.active_days_last_30),
        cohort=cohort_name(view.student.cohort),
    )
    if run.last_active is not None:
        message.streak.last_active_date.CopyFrom(proto_date(run.last_active))
    if view.updated_at is not None:
        message.update_time.CopyFrom(timestamp(view.updated_at))
    return message


def cohort_row(row: CohortRow) -> mastery_pb2.Mastery:
    message = mastery_pb2.Mastery(
        name=mastery_name(row.student_id),
        cohort=cohort_name(row.cohort),
        topics=_topics(row.topics, None),
    )
    if row.overall is not None:
        message.score = row.overall.score
        message.band = int(row.overall.band)  # type: ignore[assignment]
        message.components.CopyFrom(components(row.overall.components))
    if row.updated_at is not None:
        message.update_time.CopyFrom(timestamp(row.updated_at))
    return message


def history(
    points: list[HistoryPoint], summary: Summary
) -> mastery_pb2.QueryMasteryHistoryResponse:
    return mastery_pb2.QueryMasteryHistoryResponse(
        points=[
            mastery_pb2.HistoryPoint(
                period_start_date=proto_date(p.period_start),
                score=p.score,
                components=components(p.components),
                event_count=p.event_count,
            )
            for p in points
        ],
        summary=mastery_pb2.HistorySummary(
            mean_score=summary.mean,
            min_score=summary.minimum,
            max_score=summary.maximum,
            slope=summary.slope,
            trend=int(summary.trend),  # type: ignore[arg-type]
        ),
    )


CONSENT_SOURCES = {
    Source.STUDENT: mastery_pb2.CONSENT_SOURCE_STUDENT,
    Source.TENANT: mastery_pb2.CONSENT_SOURCE_TENANT_DEFAULT,
    Source.PLATFORM: mastery_pb2.CONSENT_SOURCE_PLATFORM_DEFAULT,
}
CONSENT_PURPOSES = {
    Purpose.ANALYTICS: mastery_pb2.CONSENT_PURPOSE_ANALYTICS,
    Purpose.MODEL_USE: mastery_pb2.CONSENT_PURPOSE_MODEL_USE,
}
# Update-mask paths of Consent and ConsentDefaults -> purposes.
CONSENT_FIELDS = {"analytics": Purpose.ANALYTICS, "model_use": Purpose.MODEL_USE}


def consent_decision(decision: Decision) -> mastery_pb2.ConsentDecision:
    message = mastery_pb2.ConsentDecision(
        granted=decision.granted,
        source=CONSENT_SOURCES[decision.source],
        recorded_by=decision.recorded_by,
    )
    if decision.recorded_at is not None:
        message.record_time.CopyFrom(timestamp(decision.recorded_at))
    return message


def consent(
    student_id: str, decisions: dict[Purpose, Decision], history: list[ConsentRecord]
) -> mastery_pb2.Consent:
    return mastery_pb2.Consent(
        name=f"students/{student_id}/consent",
        analytics=consent_decision(decisions[Purpose.ANALYTICS]),
        model_use=consent_decision(decisions[Purpose.MODEL_USE]),
        history=[
            mastery_pb2.ConsentRecord(
                purpose=CONSENT_PURPOSES[r.purpose],
                granted=r.granted,
                recorded_by=r.recorded_by,
                record_time=timestamp(r.recorded_at),
            )
            for r in history
        ],
    )


def consent_defaults(
    tenant: str, decisions: dict[Purpose, Decision]
) -> mastery_pb2.ConsentDefaults:
    return mastery_pb2.ConsentDefaults(
        name=f"tenants/{tenant}/consentDefaults",
        analytics=consent_decision(decisions[Purpose.ANALYTICS]),
        model_use=consent_decision(decisions[Purpose.MODEL_USE]),
    )


def profile_etag(time_zone: str, display_name: str) -> str:
    """A student profile's etag: a digest of what UpdateStudent may change."""
    return hashlib.sha256(f"{time_zone}\0{display_name}".encode()).hexdigest()[:16]


def student(
    student_id: str, cohort: str, record: tuple[Student, Profile] | None
) -> mastery_pb2.Student:
    """A student's profile; `record` None: one the roster knows, with no record here yet
    (the defaults)."""
    time_zone, display_name = "UTC", ""
    message = mastery_pb2.Student(
        name=f"students/{student_id}", cohort=f"cohorts/{cohort}" if cohort else ""
    )
    if record is not None:
        found, profile = record
        time_zone, display_name = found.time_zone, profile.display_name
        message.create_time.CopyFrom(timestamp(found.created_at))
        message.update_time.CopyFrom(timestamp(found.updated_at))
    message.time_zone = time_zone
    message.display_name = display_name
    message.etag = profile_etag(time_zone, display_name)
    return message
