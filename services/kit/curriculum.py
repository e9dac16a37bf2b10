"""The Python curriculum: the topics of learnflow.common.v1.Topic, in teaching order.

Shared reference data: mastery, exercises, quizzes and explanations all key on it.
"""

from __future__ import annotations

from dataclasses import dataclass

from learnflow.common.v1 import common_pb2

Topic = common_pb2.Topic


@dataclass(frozen=True, slots=True)
class TopicEntry:
    topic: common_pb2.Topic.ValueType
    slug: str  # resource id: topics/{slug}
    display_name: str
    description: str
    prerequisites: tuple[common_pb2.Topic.ValueType, ...] = ()


def _slug(topic: common_pb2.Topic.ValueType) -> str:
    return Topic.Name(topic).removeprefix("TOPIC_").lower().replace("_", "-")


def _entry(
    topic: common_pb2.Topic.ValueType,
    display: str,
    description: str,
    *prereqs: common_pb2.Topic.ValueType,
) -> TopicEntry:
    return TopicEntry(topic, _slug(topic), display, description, tuple(prereqs))


CURRICULUM: tuple[TopicEntry, ...] = (
    _entry(
        Topic.TOPIC_VARIABLES_AND_TYPES,
        "Variables and types",
        "Names, assignment, numbers, strings, booleans, None and conversions.",
    ),
    _entry(
        Topic.TOPIC_CONTROL_FLOW,
        "Control flow",
        "if/elif/else, while and for loops, break and continue.",
        Topic.TOPIC_VARIABLES_AND_TYPES,
    ),
    _entry(
        Topic.TOPIC_FUNCTIONS,
        "Functions",
        "Defining functions, parameters, return values and scope.",
        Topic.TOPIC_CONTROL_FLOW,
    ),
    _entry(
        Topic.TOPIC_STRINGS,
        "Strings",
        "String methods, slicing, f-strings and immutability.",
        Topic.TOPIC_VARIABLES_AND_TYPES,
    ),
    _entry(
        Topic.TOPIC_COLLECTIONS,
        "Collections",
        "Lists, tuples, dicts and sets: operations, mutability and copying.",
        Topic.TOPIC_CONTROL_FLOW,
    ),
    _entry(
        Topic.TOPIC_COMPREHENSIONS,
        "Comprehensions",
        "List, dict and set comprehensions and generator expressions.",
        Topic.TOPIC_COLLECTIONS,
        Topic.TOPIC_FUNCTIONS,
    ),
    _entry(
        Topic.TOPIC_ERRORS_AND_EXCEPTIONS,
        "Errors and exceptions",
        "Reading tracebacks, try/except/else/finally, raising exceptions.",
        Topic.TOPIC_FUNCTIONS,
    ),
    _entry(
        Topic.TOPIC_FILES,
        "Files",
        "Reading and writing files with context managers and paths.",
        Topic.TOPIC_STRINGS,
        Topic.TOPIC_ERRORS_AND_EXCEPTIONS,
    ),
    _entry(
        Topic.TOPIC_MODULES,
        "Modules",
        "import, packages, the standard library and __main__.",
        Topic.TOPIC_FUNCTIONS,
    ),
    _entry(
        Topic.TOPIC_RECURSION,
        "Recursion",
        "Base cases, the call stack and recursion limits.",
        Topic.TOPIC_FUNCTIONS,
    ),
    _entry(
        Topic.TOPIC_CLASSES_AND_OBJECTS,
        "Classes and objects",
        "Classes, instances, methods, inheritance and dataclasses.",
        Topic.TOPIC_FUNCTIONS,
        Topic.TOPIC_COLLECTIONS,
    ),
    _entry(
        Topic.TOPIC_ITERATORS_AND_GENERATORS,
        "Iterators and generators",
        "The iterator protocol, generators and yield.",
        Topic.TOPIC_COMPREHENSIONS,
        Topic.TOPIC_CLASSES_AND_OBJECTS,
    ),
    _entry(
        Topic.TOPIC_TESTING,
        "Testing",
        "assert, unit tests and writing testable code.",
        Topic.TOPIC_FUNCTIONS,
        Topic.TOPIC_MODULES,
    ),
)

BY_SLUG: dict[str, TopicEntry] = {entry.slug: entry for entry in CURRICULUM}
BY_TOPIC: dict[common_pb2.Topic.ValueType, TopicEntry] = {
    entry.topic: entry for entry in CURRICULUM
}
