"""The authorisation matrix, generated from the contracts.

Every RPC the mesh serves (discovered from the descriptor set) is called with a
plausible request naming student `alice` of cohort `c1` in school A, by every kind of
caller, over native gRPC (straight to the service and through Envoy) and as JSON through
Envoy, and each answer's code is asserted exactly:

- a caller without a valid token: UNAUTHENTICATED (a token for another audience:
  PERMISSION_DENIED, at Envoy and at the services alike);
- a caller the method's declared access (`learnflow.common.v1.access`, a method option
  in its proto) lets in: the very code an admin of the caller's school gets for the same
  request (the method's own answer: OK, or NOT_FOUND for a made-up resource), which may
  be no refusal;
- a caller it keeps out: PERMISSION_DENIED.

So a new RPC joins the matrix by being declared, and cannot be served undeclared. A
JSON caller also tries to reach another student through a query parameter overriding
the path variable (the service authorises on the decoded message, never the URL).
"""

from __future__ import annotations

import re
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from http import HTTPStatus
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import descriptor_pb2
from learnflow.common.v1 import access_pb2
from learnflow.mastery.v1 import mastery_pb2, mastery_pb2_grpc
from learnflow.notify.v1 import notify_pb2

from services.kit import devtokens
from services.kit.auth import TENANT_METADATA
from services.kit.config import Settings
from tests.conftest import MintToken, wait_for
from tests.integration.test_mastery import Events, exercise
from tests.support.contract_fuzz import (
    DESCRIPTOR_SET,
    GRPC_DIRECT,
    GRPC_ENVOY,
    JSON_ENVOY,
    Contract,
    Dual,
    Generator,
    GrpcCase,
    HttpCase,
    Identity,
    MethodSpec,
    Outcome,
    Runner,
    ServerErrors,
    apply,
    http_request,
    to_proto,
)

pytestmark = pytest.mark.integration

KIND_INTERVENTION = int(notify_pb2.Alert.KIND_INTERVENTION)
# Services LearnFlow serves but does not define (their protos cannot carry the option).
IMPORTED_ACCESS = {"google.longrunning.Operations": access_pb2.ACCESS_ANY_USER}
MODEL_USE_MASK = Dual("modelUse", {"paths": ["model_use"]})
# Base requests the generator cannot make valid by itself (a oneof or a field required
# only with others, which it leaves unset), by dotted field path.
REQUEST_PATCHES: dict[str, dict[str, Any]] = {
    "/learnflow.mastery.v1.MasteryService/RecalculateMastery": {"cohort": "cohorts/{cohort}"},
    "/learnflow.concepts.v1.ConceptsService/ExplainConcept": {"topic": 3},
    "/learnflow.exercise.v1.ExerciseService/GenerateExercise": {"topic": 3},
    "/learnflow.notify.v1.NotifyService/CreateAlert": {"alert.kind": KIND_INTERVENTION},
    "/google.longrunning.Operations/WaitOperation": {"name": "operations/fz0"},
    # Checked, not carried out: the matrix's student must stay for every other method.
    "/learnflow.mastery.v1.MasteryService/EraseStudentData": {"validate_only": True},
    "/learnflow.mastery.v1.MasteryService/UpdateConsent": {"update_mask": MODEL_USE_MASK},
    "/learnflow.mastery.v1.MasteryService/UpdateStudent": {
        "update_mask": Dual("displayName", {"paths": ["display_name"]})
    },
    # The tenant the call acts in, whichever school the admin is of.
    "/learnflow.mastery.v1.MasteryService/GetConsentDefaults": {
        "name": "tenants/-/consentDefaults"
    },
    "/learnflow.mastery.v1.MasteryService/UpdateConsentDefaults": {
        "consent_defaults.name": "tenants/-/consentDefaults",
        "update_mask": MODEL_USE_MASK,
    },
}
TOKEN_FAILURES = {
    "no token": "UNAUTHENTICATED",
    "forged signature": "UNAUTHENTICATED",
    "expired": "UNAUTHENTICATED",
    "alg none": "UNAUTHENTICATED",
    "wrong audience": "PERMISSION_DENIED",
    "wrong issuer": "UNAUTHENTICATED",
    "no tenant": "UNAUTHENTICATED",
}
HTTP_OF_CODE = {
    "OK": HTTPStatus.OK,
    "INVALID_ARGUMENT": HTTPStatus.BAD_REQUEST,
    "UNAUTHENTICATED": HTTPStatus.UNAUTHORIZED,
    "PERMISSION_DENIED": HTTPStatus.FORBIDDEN,
    "NOT_FOUND": HTTPStatus.NOT_FOUND,
    "FAILED_PRECONDITION": HTTPStatus.BAD_REQUEST,
    "RESOURCE_EXHAUSTED": HTTPStatus.TOO_MANY_REQUESTS,
    "UNIMPLEMENTED": HTTPStatus.NOT_IMPLEMENTED,
    "ALREADY_EXISTS": HTTPStatus.CONFLICT,
    "ABORTED": HTTPStatus.CONFLICT,
}
CODE_OF_HTTP = {
    HTTPStatus.OK: "OK",
    HTTPStatus.UNAUTHORIZED: "UNAUTHENTICATED",
    HTTPStatus.FORBIDDEN: "PERMISSION_DENIED",
}
STATUS_TEXT = re.compile(r"HTTP (\d+)(?: (\w+))?")
REFUSALS = {"UNAUTHENTICATED", "PERMISSION_DENIED"}
UNUSABLE = {"INVALID_ARGUMENT", "INTERNAL", "UNKNOWN", "TIMEOUT", "NO_ANSWER", "NOT_SENT"}


@dataclass(frozen=True, slots=True)
class Caller:
    name: str
    authorization: str | None
    # Who they are, for callers with a valid token: role, tenant ("a"/"b"), and for a
    # student whether they are the one the request names.
    role: str = ""
    school: str = ""
    self_student: bool = False
    in_cohort: bool = False
    acting_in: str | None = None  # the x-learnflow-tenant header


@dataclass
class Matrix:
    outcomes: list[Outcome]
    callers: dict[str, Caller]
    access: dict[str, int]
    methods: dict[str, MethodSpec]
    overrides: list[Outcome]
    naming: set[str]  # methods whose request names the student


def declared_access(descriptor_set: Path = DESCRIPTOR_SET) -> dict[str, int]:
    """Each LearnFlow method's declared access, by gRPC path (0 when undeclared)."""
    files = descriptor_pb2.FileDescriptorSet.FromString(descriptor_set.read_bytes())
    found = {}
    for proto_file in files.file:
        for service in proto_file.service:
            full = f"{proto_file.package}.{service.name}"
            for method in service.method:
                options = method.options
                value = options.Extensions[access_pb2.access]
                found[f"/{full}/{method.name}"] = int(value)
    return found


def allowed(access: int, caller: Caller, names_student: bool) -> bool:
    """Whether `access` lets `caller` in (within the school the caller acts in), for a
    request that names the cohort c1 and, if `names_student`, its student alice."""
    tenant_wide = caller.role in ("admin", "operator")
    if access == access_pb2.ACCESS_ANY_USER:
        return True
    if access == access_pb2.ACCESS_TENANT_ADMINS:
        return tenant_wide
    if access == access_pb2.ACCESS_STUDENT_ACTORS:
        return tenant_wide or caller.self_student
    if access == access_pb2.ACCESS_STUDENT_READERS:
        # The student is in school A's roster only: a teacher of the same-named cohort
        # in school B is not their teacher.
        teacher = caller.role == "teacher" and caller.in_cohort and caller.school == "a"
        return tenant_wide or caller.self_student or teacher
    if access == access_pb2.ACCESS_COHORT_STAFF:
        # School B's c1 is B's: its teacher is staff there, but alice is not in it.
        staff = caller.role == "teacher" and caller.in_cohort
        return tenant_wide or (staff and (caller.school == "a" or not names_student))
    raise AssertionError(f"access {access} is not one the matrix knows")


def code_of(outcome: Outcome) -> str:
    """The gRPC code an answer carries (for JSON, from the body, else the HTTP status)."""
    if outcome.transport != JSON_ENVOY:
        return outcome.status
    match = STATUS_TEXT.match(outcome.status)
    if match is None:
        return outcome.status
    if match.group(2):
        return match.group(2)
    return CODE_OF_HTTP.get(HTTPStatus(int(match.group(1))), outcome.status)


def http_status(outcome: Outcome) -> int | None:
    match = STATUS_TEXT.match(outcome.status)
    return int(match.group(1)) if match else None


@pytest.fixture(scope="module")
def matrix(
    mesh: dict[str, int],
    gateway_url: str,
    mint_token: MintToken,
    dev_key_dir: Path,
    settings: Settings,
) -> Iterator[Matrix]:
    run = uuid.uuid4().hex[:6]
    school_a, school_b = f"matrix-a-{run}", f"matrix-b-{run}"
    alice, bob, cohort, other = f"alice-{run}", f"bob-{run}", f"c1-{run}", f"c2-{run}"

    def bearer(token: str) -> str:
        return f"Bearer {token}"

    def bad(kind: devtokens.BadTokenKind) -> str:
        return bearer(
            devtokens.bad_token(
                kind,
                alice,
                "student",
                [cohort],
                tenant=school_a,
                key_dir=dev_key_dir,
                settings=settings,
            )
        )

    student_a = bearer(mint_token(alice, "student", [cohort], tenant=school_a))
    callers = [
        Caller("no token", None),
        Caller("forged signature", bad("foreign_key")),
        Caller("expired", bad("expired")),
        Caller("alg none", bad("alg_none")),
        Caller("wrong audience", bad("wrong_audience")),
        Caller("wrong issuer", bad("wrong_issuer")),
        Caller("no tenant", bad("no_tenant")),
        Caller("student self", student_a, "student", "a", self_student=True, in_cohort=True),
        Caller(
            "other student",
            bearer(mint_token(bob, "student", [cohort], tenant=school_a)),
            "student",
            "a",
            in_cohort=True,
        ),
        Caller(
            "teacher of the cohort",
            bearer(mint_token(f"tess-{run}", "teacher", [cohort], tenant=school_a)),
            "teacher",
            "a",
            in_cohort=True,
        ),
        Caller(
            "teacher of another cohort",
            bearer(mint_token(f"tom-{run}", "teacher", [other], tenant=school_a)),
            "teacher",
            "a",
        ),
        Caller(
            "teacher of a same-named cohort in another school",
            bearer(mint_token(f"tess-{run}", "teacher", [cohort], tenant=school_b)),
            "teacher",
            "b",
            in_cohort=True,
        ),
        Caller(
            "admin of the school",
            bearer(mint_token(f"root-{run}", "admin", tenant=school_a)),
            "admin",
            "a",
        ),
        Caller(
            "admin of another school",
            bearer(mint_token(f"root-{run}", "admin", tenant=school_b)),
            "admin",
            "b",
        ),
        Caller(
            "operator",
            bearer(mint_token(f"ops-{run}", "operator", tenant="platform")),
            "operator",
            "a",
            acting_in=school_a,
        ),
    ]
    # The roster learns alice's and bob's class from their own calls, and alice has a
    # mastery record (what services without the roster confirm her class by).
    assert settings.kafka_bootstrap_servers
    events = Events(settings.kafka_bootstrap_servers)
    events.send(exercise(alice, 0.5, cohort=cohort, tenant=school_a), alice)
    events.flush()
    with grpc.insecure_channel(f"127.0.0.1:{mesh['mastery']}") as channel:
        stub = mastery_pb2_grpc.MasteryServiceStub(channel)
        for caller, student in ((callers[7], alice), (callers[8], bob)):
            assert caller.authorization

            def mastery(auth: str = caller.authorization, who: str = student) -> bool:
                try:
                    stub.GetMastery(
                        mastery_pb2.GetMasteryRequest(name=f"students/{who}/mastery"),
                        metadata=[("authorization", auth)],
                        timeout=10,
                    )
                except grpc.RpcError as exc:
                    assert exc.code() == grpc.StatusCode.NOT_FOUND
                    return False
                return True

            if student == alice:
                wait_for(mastery, what="alice's mastery")
            else:
                mastery()

    contract = Contract()
    identity = Identity(
        student=alice,
        cohort=cohort,
        student_auth=student_a,
        teacher_auth=student_a,
        other_student_auth=student_a,
    )
    generator = Generator(contract, identity)
    access = declared_access()
    for service, value in IMPORTED_ACCESS.items():
        for path in access:
            if path.startswith(f"/{service}/"):
                access[path] = value
    grpc_cases: list[GrpcCase] = []
    http_cases: list[HttpCase] = []
    overrides: list[HttpCase] = []
    naming: set[str] = set()
    for method in contract.methods:
        base = generator.base(method)
        if f"students/{alice}" in repr(base):
            naming.add(method.path)
        for field, value in REQUEST_PATCHES.get(method.path, {}).items():
            *parents, leaf = field.split(".")
            target = base
            for part in parents:
                target = target.setdefault(part, {})
            target[leaf] = value.format(cohort=cohort) if isinstance(value, str) else value
        payload = to_proto(contract, method.input_type, base)
        for caller in callers:
            header = ((TENANT_METADATA, caller.acting_in),) if caller.acting_in else ()
            grpc_cases.append(
                GrpcCase(
                    method,
                    caller.name,
                    caller.name,
                    partial(bytes, payload),
                    caller.authorization,
                    metadata=header,
                )
            )
            for binding in method.bindings[:1]:
                http_cases.append(
                    HttpCase(
                        method,
                        caller.name,
                        caller.name,
                        binding.verb,
                        partial(http_request, contract, method, binding, base),
                        caller.authorization,
                        headers=header,
                    )
                )
        # alice's own URL, another student's name in the query: the transcoder lets the
        # query override the path variable, and the service must see (and refuse) bob.
        for binding in method.bindings[:1]:
            names = [path for path, pattern in binding.variables() if "students/" in pattern]
            if binding.verb != "GET" or not names:
                continue
            theirs = apply(base, _change(names[0], base, alice, bob))
            overrides.append(
                HttpCase(
                    method,
                    "query override",
                    "another student's name in the query",
                    binding.verb,
                    partial(http_request, contract, method, binding, theirs, path_from=base),
                    student_a,
                )
            )

    host, port = gateway_url.removeprefix("http://").split(":")
    runner = Runner((host, int(port)), mesh, ServerErrors(), workers=6, stream_seconds=2.0)
    try:
        outcomes = runner.run(_plan(grpc_cases, http_cases + overrides, contract))
    finally:
        runner.close()
    matrix = Matrix(
        outcomes=[o for o in outcomes if o.kind != "query override"],
        callers={c.name: c for c in callers},
        access=access,
        methods={m.label: m for m in contract.methods},
        overrides=[o for o in outcomes if o.kind == "query override"],
        naming=naming,
    )
    yield matrix


def _change(path: tuple[str, ...], base: dict[str, Any], own: str, theirs: str) -> Any:
    from tests.support.contract_fuzz import Change

    value = base
    for part in path:
        value = value[part]
    return Change("query override", "another student", path, str(value).replace(own, theirs))


def _plan(grpc_cases: list[GrpcCase], http_cases: list[HttpCase], contract: Contract) -> Any:
    from tests.support.contract_fuzz import Plan

    plan = Plan(http=http_cases, methods=list(contract.methods))
    # Every case straight to the service and through Envoy (the runner samples Envoy's
    # gRPC cases by kind: one kind per caller keeps all of them).
    plan.grpc = grpc_cases
    return plan


def test_every_served_method_declares_who_may_call_it(matrix: Matrix) -> None:
    undeclared = sorted(m.path for m in matrix.methods.values() if not matrix.access.get(m.path))
    assert not undeclared, f"methods without (learnflow.common.v1.access): {undeclared}"


def test_every_caller_gets_exactly_the_code_its_access_says(matrix: Matrix) -> None:
    by_case: dict[tuple[str, str, str], str] = {}
    details: dict[tuple[str, str, str], str] = {}
    for outcome in matrix.outcomes:
        by_case[(outcome.transport, outcome.method, outcome.kind)] = code_of(outcome)
        details[(outcome.transport, outcome.method, outcome.kind)] = outcome.detail
    transports = {o.transport for o in matrix.outcomes}
    assert transports == {GRPC_DIRECT, GRPC_ENVOY, JSON_ENVOY}, transports
    wrong: list[str] = []
    unusable: set[str] = set()
    checked: Counter[str] = Counter()
    for (transport, label, name), code in sorted(by_case.items()):
        method = matrix.methods[label]
        caller = matrix.callers[name]
        if name in TOKEN_FAILURES:
            expected = TOKEN_FAILURES[name]
        else:
            admin = "admin of the school" if caller.school == "a" else "admin of another school"
            reference = by_case.get((transport, label, admin))
            if reference is None or reference in REFUSALS or reference in UNUSABLE:
                why = details.get((transport, label, admin), "")
                unusable.add(f"{transport} {label}: {admin} got {reference} ({why})")
                continue
            if reference == "UNIMPLEMENTED":
                expected = "UNIMPLEMENTED"  # declared, not served yet: nothing to authorise
            elif allowed(matrix.access[method.path], caller, method.path in matrix.naming):
                expected = reference
            else:
                expected = "PERMISSION_DENIED"
        checked[transport] += 1
        if code != expected:
            why = details.get((transport, label, name), "")[:80]
            wrong.append(f"{transport} {label} | {name} | got {code}, expected {expected} ({why})")
    print(f"\nauthorisation matrix: {sum(checked.values())} cases checked {dict(checked)}")
    assert not unusable, "base requests an admin cannot use:\n" + "\n".join(sorted(unusable))
    assert not wrong, f"{len(wrong)} wrong answers:\n" + "\n".join(wrong)


def test_json_answers_carry_the_http_status_of_their_code(matrix: Matrix) -> None:
    mismatched = []
    for outcome in matrix.outcomes:
        if outcome.transport != JSON_ENVOY:
            continue
        code = code_of(outcome)
        status = http_status(outcome)
        if code in HTTP_OF_CODE and status != HTTP_OF_CODE[code]:
            mismatched.append(f"{outcome.method} {outcome.kind}: {outcome.status}")
    assert not mismatched, "\n".join(mismatched)


def test_a_query_parameter_cannot_swap_in_another_student(matrix: Matrix) -> None:
    assert matrix.overrides, "no GET route names a student"
    answered: defaultdict[str, list[str]] = defaultdict(list)
    for outcome in matrix.overrides:
        answered[code_of(outcome)].append(outcome.method)
    # UNIMPLEMENTED methods authorise nothing yet; every other one refuses bob's data.
    assert set(answered) <= {"PERMISSION_DENIED", "UNIMPLEMENTED"}, dict(answered)
    assert answered["PERMISSION_DENIED"], dict(answered)
