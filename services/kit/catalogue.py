"""The service catalogue: names, proto services and default ports.

Everything that needs to know which services exist (the run command, the gateway
generator, deployment checks) reads it from here.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ServiceSpec:
    name: str
    package: str
    grpc_services: tuple[str, ...]
    port: int
    extra_full_names: tuple[str, ...] = ()

    @property
    def full_names(self) -> tuple[str, ...]:
        """Fully qualified gRPC service names this server registers."""
        own = tuple(f"{self.package}.{svc}" for svc in self.grpc_services)
        return own + self.extra_full_names

    @property
    def address_env(self) -> str:
        """Environment variable that overrides where callers reach this service."""
        return f"{self.name.upper()}_ADDR"


SERVICES: tuple[ServiceSpec, ...] = (
    ServiceSpec("triage", "learnflow.triage.v1", ("TriageService",), 50051),
    ServiceSpec("concepts", "learnflow.concepts.v1", ("ConceptsService",), 50052),
    ServiceSpec("review", "learnflow.review.v1", ("ReviewService",), 50053),
    ServiceSpec("debug", "learnflow.debug.v1", ("DebugService",), 50054),
    ServiceSpec("exercise", "learnflow.exercise.v1", ("ExerciseService", "QuizService"), 50055),
    ServiceSpec("sandbox", "learnflow.sandbox.v1", ("SandboxService",), 50056),
    ServiceSpec(
        "mastery",
        "learnflow.mastery.v1",
        ("MasteryService",),
        50057,
        # Recalculations are long-running operations (AIP-151) served by mastery.
        extra_full_names=("google.longrunning.Operations",),
    ),
    ServiceSpec("notify", "learnflow.notify.v1", ("NotifyService",), 50058),
    # The audit trail every server records (services/kit/audit.py), per tenant.
    ServiceSpec("audit", "learnflow.audit.v1", ("AuditService",), 50059),
)

SERVICES_BY_NAME: dict[str, ServiceSpec] = {s.name: s for s in SERVICES}

# The largest request message a service accepts; the gateway refuses larger bodies
# itself (413) so it never buffers them.
MAX_MESSAGE_BYTES = 4 * 1024 * 1024

GATEWAY_PORT = 8080
GATEWAY_ADMIN_PORT = 9901
