"""From a student's question to a topic and, when it is a classic confusion, to the
curated answer for it.

Triggers and keywords are small word sets ("last twice", "for loop"): one matches a
question when all of its words appear in it, in any order. Words are lower-cased and
plural endings dropped on both sides, so "prints the last items twice" matches
"print last item twice". The operators students ask about (`=`, `==`, `//`) are words too.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from services.concepts.domain.content import CommonQuestion, Library, Topic

_TOKEN = re.compile(r"==|!=|//|\+=|[a-z_][a-z0-9_]*|\d+|=")


def _stem(word: str) -> str:
    if len(word) <= 3 or not word.endswith("s"):
        return word
    if word.endswith(("sses", "ches", "shes", "xes")):
        return word[:-2]
    if word.endswith("ies") and len(word) > 4:
        return word[:-3] + "y"
    if word.endswith(("ss", "us", "is")):
        return word
    return word[:-1]


def words(text: str) -> frozenset[str]:
    return frozenset(_stem(token) for token in _TOKEN.findall(text.lower()))


def _score(patterns: Iterable[str], asked: frozenset[str]) -> tuple[int, int]:
    """(size of the largest matching word set, how many matched); (0, 0) for none."""
    sizes = [len(need) for need in map(words, patterns) if need and need <= asked]
    return (max(sizes), len(sizes)) if sizes else (0, 0)


@dataclass(frozen=True, slots=True)
class Match:
    topic: Topic
    question: CommonQuestion | None


def match_question(
    library: Library, question: str, topic: Topic | None = None
) -> CommonQuestion | None:
    """The common question `question` is asking, if any (within `topic` when given)."""
    asked = words(question)
    best: tuple[tuple[int, int], CommonQuestion] | None = None
    for candidate in library.questions():
        if topic is not None and candidate.topic is not topic:
            continue
        score = _score(candidate.triggers, asked)
        if score > (0, 0) and (best is None or score > best[0]):
            best = (score, candidate)
    return best[1] if best else None


def detect_topic(library: Library, question: str) -> Topic | None:
    """The topic a question is about from the topics' keywords; None if none match.
    Ties go to the later topic: later topics build on earlier ones, so a question that
    names both ("a list comprehension") is about the more specific one."""
    asked = words(question)
    best: tuple[tuple[int, int, int], Topic] | None = None
    for topic, content in library.topics.items():
        size, count = _score(content.keywords, asked)
        if count == 0:
            continue
        total = sum(len(need) for need in map(words, content.keywords) if need <= asked)
        key = (total, size, int(topic))
        if best is None or key > best[0]:
            best = (key, topic)
    return best[1] if best else None


def resolve(library: Library, topic: Topic | None, question: str) -> Match | None:
    """The topic to explain and the common question asked, if any. An explicit topic
    wins; a question is then matched within it. Without a topic, a matching common
    question decides the topic, else the keywords do; None when nothing does."""
    if topic is not None:
        return Match(topic, match_question(library, question, topic) if question else None)
    if not question.strip():
        return None
    common = match_question(library, question)
    if common is not None:
        return Match(common.topic, common)
    detected = detect_topic(library, question)
    return Match(detected, None) if detected is not None else None
