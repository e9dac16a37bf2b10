"""Wires the concepts service: curated content, the sandbox (every example runs there
before it is shown), the Mermaid validator (one Node process, started on first use),
the mastery engine (level and cohort), the model when OPENAI_API_KEY is set, and the
publisher of explanations (learning.responses)."""

from __future__ import annotations

import grpc
from learnflow.concepts.v1 import concepts_pb2_grpc

from services.concepts.domain.content import default_library
from services.concepts.domain.proof import ExampleProver, Run
from services.concepts.engine import ConceptsEngine
from services.concepts.mermaid_validator import MermaidValidator
from services.concepts.servicer import ConceptsServicer
from services.concepts.writer import ModelWriter
from services.kit.bus import Publisher
from services.kit.interceptors import maybe_current_call
from services.kit.peers import MasteryClient, SandboxClient
from services.kit.responses import LearningResponses
from services.kit.runtime import Runtime
from services.kit.server import ServiceParts

SOURCE = "//learnflow.dev/concepts"
EXAMPLE_WALL_SECONDS = 5.0  # a curated example runs in well under 100 ms
EXAMPLE_OUTPUT_BYTES = 16 * 1024  # more than any example may show (proof.MAX_OUTPUT_CHARS)


class SandboxExecute:
    """proof.Execute over the sandbox service."""

    def __init__(self, sandbox: SandboxClient) -> None:
        self._sandbox = sandbox

    def __call__(self, code: str) -> Run:
        run = self._sandbox.run(code)
        return Run(
            stdout=run.stdout,
            stderr=run.stderr,
            exit_code=run.exit_code,
            timed_out=run.timed_out,
            memory_exceeded=run.memory_exceeded,
        )


class MasteryCohort:
    """The student's cohort id from the mastery engine; None when it does not know the
    student or refuses the caller (the caller's token travels with the call).

    The mastery engine answers in the tenant the current call acts in (the kit's clients
    carry the token, and an operator's tenant): it is asked only about that tenant's
    students, and None answers for a student of any other."""

    def __init__(self, mastery: MasteryClient) -> None:
        self._mastery = mastery

    def __call__(self, tenant: str, student_id: str) -> str | None:
        call = maybe_current_call()
        acting_in = call.principal.tenant if call is not None and call.principal else None
        if tenant != acting_in:
            return None
        found = self._mastery.get(student_id)
        cohort = found.cohort.removeprefix("cohorts/") if found is not None else ""
        return cohort or None


def build(runtime: Runtime) -> ServiceParts:
    settings = runtime.settings
    sandbox = SandboxClient(
        settings.address_of("sandbox"),
        wall_seconds=EXAMPLE_WALL_SECONDS,
        max_output_bytes=EXAMPLE_OUTPUT_BYTES,
    )
    mastery = MasteryClient(settings.address_of("mastery"))
    validator = MermaidValidator()
    engine = ConceptsEngine(
        default_library(),
        ExampleProver(SandboxExecute(sandbox)),
        validator,
        mastery.level,
        ModelWriter(runtime.llm),
        responses=LearningResponses(Publisher(runtime.bus, SOURCE), "concepts"),
    )

    def register(server: grpc.Server) -> None:
        concepts_pb2_grpc.add_ConceptsServiceServicer_to_server(
            ConceptsServicer(engine, MasteryCohort(mastery)), server
        )

    return ServiceParts(register=register, on_stop=[validator.close])
