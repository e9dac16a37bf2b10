"""AuditService: authorise, decode the filters, list the caller's tenant's trail, encode."""

from __future__ import annotations

from typing import Protocol

import grpc
from learnflow.audit.v1 import audit_pb2, audit_pb2_grpc

from services.audit.convert import to_event
from services.audit.domain.query import Position, Query, check_query, next_page
from services.audit.domain.records import AuditRecord
from services.kit.auth import Role
from services.kit.errors import Validator
from services.kit.interceptors import current_principal


class Trail(Protocol):
    """Where the trail is read (AuditStore)."""

    def list(self, tenant: str, query: Query) -> list[AuditRecord]: ...


class AuditServicer(audit_pb2_grpc.AuditServiceServicer):
    def __init__(self, store: Trail) -> None:
        self._store = store

    def ListAuditEvents(
        self, request: audit_pb2.ListAuditEventsRequest, context: grpc.ServicerContext
    ) -> audit_pb2.ListAuditEventsResponse:
        principal = current_principal()
        # The trail of the tenant the call acts in: its admins', and operators' acting
        # there (an admin cannot act in another tenant: the kit refuses it first).
        principal.require_role(Role.ADMIN, Role.OPERATOR)
        checks = Validator()
        start = checks.time(
            request.start_time if request.HasField("start_time") else None, "start_time"
        )
        end = checks.time(request.end_time if request.HasField("end_time") else None, "end_time")
        query, bad = check_query(
            student=request.student,
            actor=request.actor,
            method=request.method,
            start=start,
            end=end,
            page_size=request.page_size,
            page_token=request.page_token,
        )
        for field, description in bad:
            checks.add(field, description)
        checks.raise_if_invalid()
        assert query is not None
        rows = self._store.list(principal.tenant, query)
        return audit_pb2.ListAuditEventsResponse(
            audit_events=[to_event(row) for row in rows[: query.size]],
            next_page_token=next_page(
                [Position(row.event_time, row.event_id) for row in rows],
                query.size,
                query.filters,
            ),
        )
