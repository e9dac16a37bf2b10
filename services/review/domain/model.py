"""What a review is made of, as plain values. Enum numbers match learnflow.review.v1."""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum


class Category(IntEnum):
    STYLE = 1
    COMPLEXITY = 2
    READABILITY = 3
    CORRECTNESS = 4


class Severity(IntEnum):
    INFO = 1
    WARNING = 2
    ERROR = 3


class Origin(IntEnum):
    LINTER = 1
    MODEL = 2


@dataclass(frozen=True, slots=True)
class Span:
    """1-based lines and columns; `end_line`/`end_column` inclusive, as in SourceSpan."""

    line: int
    column: int = 1
    end_line: int = 0
    end_column: int = 0


@dataclass(frozen=True, slots=True)
class Finding:
    rule: str
    category: Category
    severity: Severity
    message: str
    span: Span


@dataclass(frozen=True, slots=True)
class Suggestion:
    """Replace lines `span.line`..`span.end_line` (whole lines, joined by newlines)
    `before` with `after`."""

    title: str
    before: str
    after: str
    rationale: str
    span: Span
    origin: Origin


@dataclass(frozen=True, slots=True)
class Metrics:
    lines_of_code: int  # lines holding code: no blank, comment-only or docstring lines
    max_cyclomatic_complexity: int
    mean_cyclomatic_complexity: float
    maintainability_index: float  # 0-100


@dataclass(frozen=True, slots=True)
class Review:
    findings: tuple[Finding, ...]
    suggestions: tuple[Suggestion, ...]
    metrics: Metrics
    quality_score: int
    summary: str
    parses: bool  # False: the code has a syntax error and was not analysed further
