"""The curriculum's topics, teaching levels and mastery bands as plain enums, for
domain code, and the percent that bands and every shown score are read from.

Values equal learnflow.common.v1.Topic, Level and MasteryBand (a test holds them
together), so
domain modules use them without importing generated code, and servicers convert with
int(). One definition for every service: the curriculum is shared reference data.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
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

    @property
    def label(self) -> str:
        """For people: "errors and exceptions"."""
        return self.name.lower().replace("_", " ")


class Level(IntEnum):
    BEGINNER = 1
    INTERMEDIATE = 2
    ADVANCED = 3

    @property
    def label(self) -> str:
        return self.name.lower()


class Band(IntEnum):
    NONE = 0
    RED = 1
    YELLOW = 2
    GREEN = 3
    BLUE = 4

    @property
    def label(self) -> str:
        return "no band" if self is Band.NONE else self.name.lower()


def percent(score: float) -> int:
    """score * 100 rounded half up; float noise below 1e-9 is ignored (0.405 -> 41)."""
    return math.floor(round(score * 100, 9) + 0.5)


# The topic an error of each type is about, when nothing more specific applies (its
# message, the construct on its line): one table for every service that reads errors.
ERROR_TOPICS: Mapping[str, Topic] = {
    "KeyError": Topic.COLLECTIONS,
    "IndexError": Topic.COLLECTIONS,
    "RecursionError": Topic.RECURSION,
    "FileNotFoundError": Topic.FILES,
    "IsADirectoryError": Topic.FILES,
    "NotADirectoryError": Topic.FILES,
    "PermissionError": Topic.FILES,
    "UnsupportedOperation": Topic.FILES,
    "JSONDecodeError": Topic.FILES,
    "UnicodeDecodeError": Topic.FILES,
    "ImportError": Topic.MODULES,
    "ModuleNotFoundError": Topic.MODULES,
    "StopIteration": Topic.ITERATORS_AND_GENERATORS,
    "StopAsyncIteration": Topic.ITERATORS_AND_GENERATORS,
    "AssertionError": Topic.TESTING,
    "UnboundLocalError": Topic.FUNCTIONS,
    "ZeroDivisionError": Topic.VARIABLES_AND_TYPES,
    "OverflowError": Topic.VARIABLES_AND_TYPES,
    "NameError": Topic.VARIABLES_AND_TYPES,
    "ValueError": Topic.VARIABLES_AND_TYPES,
    "TypeError": Topic.VARIABLES_AND_TYPES,
    "AttributeError": Topic.CLASSES_AND_OBJECTS,
}
