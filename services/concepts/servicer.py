"""ConceptsService: thin gRPC layer over the curriculum and the concepts engine:
decode, authorise on the message, call the engine, encode."""

from __future__ import annotations

import grpc
from learnflow.concepts.v1 import concepts_pb2, concepts_pb2_grpc

from services.concepts.domain.content import Level, Topic
from services.concepts.domain.explain import Explanation
from services.concepts.engine import ConceptsEngine, StudentCohort, authorise
from services.kit.curriculum import BY_SLUG, CURRICULUM, TopicEntry
from services.kit.errors import NotFound, Validator
from services.kit.interceptors import current_principal
from services.kit.names import check_name, parse_name
from services.kit.pagination import next_page_token, parse_page

TOPIC_PREFIX = "topics/"
MAX_QUESTION_CHARS = 2000


def _topic_info(entry: TopicEntry) -> concepts_pb2.TopicInfo:
    return concepts_pb2.TopicInfo(
        name=TOPIC_PREFIX + entry.slug,
        topic=entry.topic,
        display_name=entry.display_name,
        description=entry.description,
        prerequisites=entry.prerequisites,
    )


def explanation_message(e: Explanation) -> concepts_pb2.Explanation:
    message = concepts_pb2.Explanation(
        topic=int(e.topic),  # type: ignore[arg-type]
        level=int(e.level),  # type: ignore[arg-type]
        title=e.title,
        body=e.body,
        examples=[
            concepts_pb2.CodeExample(code=x.code, output=x.output, caption=x.caption)
            for x in e.examples
        ],
        pitfalls=list(e.pitfalls),
        origin=int(e.origin),  # type: ignore[arg-type]
    )
    if e.diagram is not None:
        message.diagram.CopyFrom(
            concepts_pb2.Diagram(mermaid=e.diagram.mermaid, caption=e.diagram.caption)
        )
    return message


class ConceptsServicer(concepts_pb2_grpc.ConceptsServiceServicer):
    def __init__(self, engine: ConceptsEngine, student_cohort: StudentCohort) -> None:
        self._engine = engine
        self._student_cohort = student_cohort

    def ListTopics(
        self, request: concepts_pb2.ListTopicsRequest, context: grpc.ServicerContext
    ) -> concepts_pb2.ListTopicsResponse:
        page = parse_page(request.page_size, request.page_token, default=100, maximum=100)
        entries = CURRICULUM[page.offset : page.offset + page.size]
        return concepts_pb2.ListTopicsResponse(
            topics=[_topic_info(e) for e in entries],
            next_page_token=next_page_token(page, len(CURRICULUM)),
        )

    def GetTopic(
        self, request: concepts_pb2.GetTopicRequest, context: grpc.ServicerContext
    ) -> concepts_pb2.TopicInfo:
        # Parsed like every other name: a bounded id, so that what the error repeats of
        # the caller's input stays small (a 100 KB name echoed into the status made a
        # trailer no proxy forwards: the caller got UNAVAILABLE instead of an answer).
        (slug,) = parse_name(request.name, "topics/*", "name")
        entry = BY_SLUG.get(slug)
        if entry is None:
            raise NotFound(f"{request.name} does not exist", metadata={"name": request.name})
        return _topic_info(entry)

    def ExplainConcept(
        self, request: concepts_pb2.ExplainConceptRequest, context: grpc.ServicerContext
    ) -> concepts_pb2.Explanation:
        checks = Validator()
        (student_id,) = check_name(checks, request.student, "students/*", "student")
        checks.check(0 <= request.topic <= max(Topic), "topic", "is not a curriculum topic")
        checks.check(0 <= request.level <= max(Level), "level", "is not a level")
        checks.check(
            len(request.question) <= MAX_QUESTION_CHARS,
            "question",
            f"must be at most {MAX_QUESTION_CHARS} characters",
        )
        checks.check(
            bool(request.topic) or bool(request.question.strip()),
            "topic",
            "is required when question is empty: set topic, question or both",
        )
        checks.raise_if_invalid()
        authorise(current_principal(), student_id, self._student_cohort)
        explained = self._engine.explain(
            student_id,
            topic=Topic(request.topic) if request.topic else None,
            question=request.question,
            level=Level(request.level) if request.level else None,
            include_diagram=request.include_diagram,
        )
        return explanation_message(explained)
