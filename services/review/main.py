"""Wires the review service: the ruff linter, the shared model client (offline without
OPENAI_API_KEY), storage in the `review` schema and the progress publisher."""

from __future__ import annotations

import logging
from pathlib import Path

import grpc
from learnflow.review.v1 import review_pb2_grpc

from services.kit.bus import Publisher
from services.kit.llm import PromptTemplates
from services.kit.responses import LearningResponses
from services.kit.retention import Purge, older_than_window
from services.kit.runtime import Runtime
from services.kit.server import ServiceParts
from services.review.domain.linter import RuffLinter
from services.review.engine import PROMPTS, ReviewEngine
from services.review.reviews import CodeReviews
from services.review.servicer import ReviewServicer
from services.review.store import ReviewStore

MIGRATIONS = Path(__file__).parent / "migrations"
SOURCE = "//learnflow.dev/review"

log = logging.getLogger("learnflow.review")


def build(runtime: Runtime) -> ServiceParts:
    db = runtime.database("review", MIGRATIONS)
    bus = runtime.bus
    linter = RuffLinter()
    log.info("linter ready", extra={"ruff": linter.version()})  # fails fast if it cannot run
    engine = ReviewEngine(linter, runtime.llm, PromptTemplates(PROMPTS))
    publisher = Publisher(bus, SOURCE)

    store = ReviewStore(db)

    def register(server: grpc.Server) -> None:
        review_pb2_grpc.add_ReviewServiceServicer_to_server(
            ReviewServicer(
                CodeReviews(engine, store, publisher, LearningResponses(publisher, "review")),
                store,
                runtime.roster,
            ),
            server,
        )

    parts = ServiceParts(
        register=register,
        checks={"postgres": db.check, "bus": bus.check, "linter": linter.check_installed},
        roster=runtime.roster,
    )
    return runtime.with_student_data(
        parts, "review", erase=store.erase_student, gather=store.export_student
    )


def retention(runtime: Runtime) -> Purge:
    """Code reviews older than the window."""
    store = ReviewStore(runtime.database("review", MIGRATIONS))
    return older_than_window(runtime.settings, store.purge)
