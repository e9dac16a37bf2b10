"""ConceptsService: thin gRPC layer over the curriculum."""

from __future__ import annotations

import grpc
from learnflow.concepts.v1 import concepts_pb2, concepts_pb2_grpc

from services.kit.curriculum import BY_SLUG, CURRICULUM, TopicEntry
from services.kit.errors import FieldViolation, InvalidArgument, NotFound, NotImplementedYet
from services.kit.pagination import next_page_token, parse_page

TOPIC_PREFIX = "topics/"


def _topic_info(entry: TopicEntry) -> concepts_pb2.TopicInfo:
    return concepts_pb2.TopicInfo(
        name=TOPIC_PREFIX + entry.slug,
        topic=entry.topic,
        display_name=entry.display_name,
        description=entry.description,
        prerequisites=entry.prerequisites,
    )


class ConceptsServicer(concepts_pb2_grpc.ConceptsServiceServicer):
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
        if not request.name.startswith(TOPIC_PREFIX):
            raise InvalidArgument([FieldViolation("name", "must look like topics/{topic}")])
        entry = BY_SLUG.get(request.name.removeprefix(TOPIC_PREFIX))
        if entry is None:
            raise NotFound(f"{request.name} does not exist", metadata={"name": request.name})
        return _topic_info(entry)

    def ExplainConcept(
        self, request: concepts_pb2.ExplainConceptRequest, context: grpc.ServicerContext
    ) -> concepts_pb2.Explanation:
        raise NotImplementedYet(
            "/learnflow.concepts.v1.ConceptsService/ExplainConcept is not implemented yet",
            metadata={"method": "/learnflow.concepts.v1.ConceptsService/ExplainConcept"},
        )
