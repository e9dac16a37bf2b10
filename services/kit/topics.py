"""The curriculum's topics and teaching levels as plain enums, for domain code.

Values equal learnflow.common.v1.Topic and Level (a test holds them together), so
domain modules use them without importing generated code, and servicers convert with
int(). One definition for every service: the curriculum is shared reference data.
"""

from __future__ import annotations

from enum import IntEnum


class Topic(IntEnum):
    VARIABLES_AND_TYPES = 1
    CONTROL_FLOW = 2
    FUNCTIONS = 3
    STRINGS = 4
    COLLECTIONS = 5
    COMPREHENSIONS = 6
    FILES = 7
    ERRORS_AND_EXCEPTIONS = 8
    MODULES = 9
    CLASSES_AND_OBJECTS = 10
    ITERATORS_AND_GENERATORS = 11
    TESTING = 12
    RECURSION = 13

    @property
    def slug(self) -> str:
        """The curriculum slug (`topics/{slug}`), e.g. "errors-and-exceptions"."""
        return self.name.lower().replace("_", "-")

    @classmethod
    def from_slug(cls, slug: str) -> Topic:
        return cls[slug.upper().replace("-", "_")]


class Level(IntEnum):
    BEGINNER = 1
    INTERMEDIATE = 2
    ADVANCED = 3

    @property
    def label(self) -> str:
        return self.name.lower()
