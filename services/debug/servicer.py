"""DebugService: decode and authorise on the message, call the debug engine, encode.

Every call acts in the caller's tenant (`Principal.tenant`): a diagnosis of another
tenant's student of the same id does not exist here (NOT_FOUND; an empty list)."""

from __future__ import annotations

import grpc
from learnflow.debug.v1 import debug_pb2, debug_pb2_grpc

from services.debug.engine import DebugEngine, Request
from services.debug.store import DebugStore
from services.kit.errors import NotFound, Validator
from services.kit.interceptors import current_principal
from services.kit.names import check_name, parse_name
from services.kit.pagination import next_page_token, parse_page
from services.kit.roster import Roster

MAX_CODE_BYTES = 64 * 1024
MAX_TRACEBACK_BYTES = 16 * 1024


class DebugServicer(debug_pb2_grpc.DebugServiceServicer):
    def __init__(self, engine: DebugEngine, store: DebugStore, roster: Roster) -> None:
        self._engine = engine
        self._store = store
        self._roster = roster

    def CreateDiagnosis(
        self, request: debug_pb2.CreateDiagnosisRequest, context: grpc.ServicerContext
    ) -> debug_pb2.Diagnosis:
        checks = Validator()
        (student_id,) = check_name(checks, request.parent, "students/*", "parent")
        given = request.diagnosis
        checks.check(bool(given.code.strip()), "diagnosis.code", "is required")
        checks.check(
            len(given.code.encode()) <= MAX_CODE_BYTES,
            "diagnosis.code",
            f"must be at most {MAX_CODE_BYTES // 1024} KiB",
        )
        checks.check(
            len(given.traceback.encode()) <= MAX_TRACEBACK_BYTES,
            "diagnosis.traceback",
            f"must be at most {MAX_TRACEBACK_BYTES // 1024} KiB",
        )
        if given.exercise:
            check_name(checks, given.exercise, "exercises/*", "diagnosis.exercise")
        checks.raise_if_invalid()
        principal = current_principal()
        principal.require_acting_as(student_id)
        return self._engine.diagnose(
            Request(
                tenant=principal.tenant,
                student_id=student_id,
                cohort=self._roster.cohort_for_work(principal, student_id),
                code=given.code,
                traceback=given.traceback,
                exercise=given.exercise,
            )
        )

    def GetDiagnosis(
        self, request: debug_pb2.GetDiagnosisRequest, context: grpc.ServicerContext
    ) -> debug_pb2.Diagnosis:
        student_id, diagnosis_id = parse_name(request.name, "students/*/diagnoses/*", "name")
        principal = current_principal()
        # Before any lookup (no existence probing), and exactly as ListDiagnoses does.
        self._roster.require_readable(principal, student_id)
        stored = self._store.diagnosis(principal.tenant, student_id, diagnosis_id)
        if stored is None:
            raise NotFound(f"{request.name} does not exist", metadata={"name": request.name})
        return self._engine.render(stored)

    def ListDiagnoses(
        self, request: debug_pb2.ListDiagnosesRequest, context: grpc.ServicerContext
    ) -> debug_pb2.ListDiagnosesResponse:
        (student_id,) = parse_name(request.parent, "students/*", "parent")
        page = parse_page(request.page_size, request.page_token, default=20, maximum=100)
        principal = current_principal()
        self._roster.require_readable(principal, student_id)
        found, total = self._store.list_diagnoses(
            principal.tenant, student_id, page.offset, page.size
        )
        diagnoses = []
        for stored in found:
            item = self._engine.render(stored)
            item.ClearField("code")  # listings stay light; GetDiagnosis has the code
            item.ClearField("traceback")
            diagnoses.append(item)
        return debug_pb2.ListDiagnosesResponse(
            diagnoses=diagnoses, next_page_token=next_page_token(page, total)
        )

    def RevealNextHint(
        self, request: debug_pb2.RevealNextHintRequest, context: grpc.ServicerContext
    ) -> debug_pb2.Diagnosis:
        student_id, diagnosis_id = parse_name(request.name, "students/*/diagnoses/*", "name")
        principal = current_principal()
        principal.require_acting_as(student_id)
        return self._engine.reveal_next(principal.tenant, student_id, diagnosis_id)
