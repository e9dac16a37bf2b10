"""learning.responses: every answer an agent gives, published keyed by
student so the student's other open screens receive it live (notify streams it).

One rule for every agent, kept here:

* A whole answer (an explanation, a review, a diagnosis or hint, a graded submission
  or quiz, a generated exercise or quiz) is one `LearningResponse`: a short Markdown
  summary, `sequence` 0, `final` true, and the `resource` to fetch for all of it.
  A streamed answer (triage `Ask`) is one event per chunk, in order, the last `final`.
* `request_id` is the request id of the call being answered (`x-request-id`, which
  the kit's clients carry across the mesh).
* An answer is published once, by whoever gives it to the student. Triage calls the
  agents for an `Ask` and streams (and publishes) their answer itself, so it marks
  those calls `RELAYED_METADATA`; an agent called that way publishes nothing, else the
  student's screens would show the same answer twice.
* Publishing is after the answer is committed and never fails the call: the student
  has the answer in the reply already, so a bus that cannot take the event is logged
  and the answer is returned (the live copy is lost, the answer is not).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from google.protobuf.timestamp_pb2 import Timestamp
from learnflow.events.v1 import events_pb2

from services.kit.bus import LEARNING_RESPONSES, Publisher
from services.kit.interceptors import maybe_current_call

log = logging.getLogger("learnflow.responses")

RELAYED_KEY = "x-learnflow-relayed"
"""Metadata on a call whose caller delivers (and publishes) the answer itself."""
RELAYED_METADATA = ((RELAYED_KEY, "1"),)
MAX_TEXT_CHARS = 8000
"""A live event carries a summary, not a document: longer text is cut (the resource
has all of it)."""


def relayed() -> bool:
    """Whether the call being handled was marked RELAYED_METADATA by its caller."""
    call = maybe_current_call()
    if call is None:
        return False
    metadata = call.grpc_context.invocation_metadata() or ()
    return any(key == RELAYED_KEY for key, _ in metadata)


def request_id() -> str:
    """The request id of the call being handled ("" outside a call)."""
    call = maybe_current_call()
    return call.request_id if call is not None else ""


def call_tenant() -> str:
    """The tenant the call being handled acts in ("" outside an authenticated call)."""
    call = maybe_current_call()
    return call.principal.tenant if call is not None and call.principal is not None else ""


def clip(text: str, limit: int = MAX_TEXT_CHARS) -> str:
    text = text.strip()
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


class LearningResponses:
    """Publishes agents' answers on learning.responses through the kit's Publisher."""

    def __init__(self, publisher: Publisher, agent: str) -> None:
        self._publisher = publisher
        self.agent = agent

    def answer(self, student_id: str, text: str, *, resource: str = "", cohort: str = "") -> None:
        """A whole answer: one final event (skipped when a caller relays the answer)."""
        if relayed():
            return
        self.chunk(
            student_id,
            text=clip(text),
            request_id=request_id(),
            sequence=0,
            final=True,
            resource=resource,
            cohort=cohort,
        )

    def chunk(
        self,
        student_id: str,
        *,
        text: str,
        request_id: str,
        sequence: int,
        final: bool,
        resource: str = "",
        cohort: str = "",
        agent: str | None = None,
        tenant: str | None = None,
    ) -> bool:
        """One piece of an answer (for the student of `tenant`, by default the current
        call's); False (logged) when the bus could not take it."""
        now = Timestamp()
        now.FromDatetime(datetime.now(UTC))
        event = events_pb2.LearningResponse(
            student=events_pb2.StudentRef(
                student_id=student_id,
                cohort=cohort,
                tenant=call_tenant() if tenant is None else tenant,
            ),
            request_id=request_id,
            agent=agent or self.agent,
            sequence=sequence,
            text=text,
            final=final,
            occur_time=now,
            resource=resource,
        )
        try:
            self._publisher.publish(LEARNING_RESPONSES, event, key=student_id)
        except Exception:
            # The student has the answer in the reply; only its live copy is lost.
            log.warning(
                "learning response not published",
                exc_info=True,
                extra={
                    "student": student_id,
                    "agent": event.agent,
                    "request_id": request_id,
                    "sequence": sequence,
                },
            )
            return False
        return True
