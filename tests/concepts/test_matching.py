"""From a question to its topic and, for a classic confusion, to the focused answer."""

from __future__ import annotations

import pytest

from services.concepts.domain.content import Library, Topic
from services.concepts.domain.matching import (
    detect_topic,
    match_question,
    resolve,
    words,
)


def test_words_are_lowercased_singular_and_keep_operators() -> None:
    assert words("Why does my loop PRINT the items twice?") >= {"loop", "print", "item", "twice"}
    assert words("= vs ==") == {"=", "vs", "=="}
    assert words("dictionaries and classes") == {"dictionary", "and", "class"}
    assert words("what is 7 // 2") >= {"//", "7", "2"}


@pytest.mark.parametrize(
    ("question", "expected"),
    [
        ("why does my for loop print the last item twice?", "loop-last-item-twice"),
        ("My loop prints the last element twice, help", "loop-last-item-twice"),
        ("what's the difference between = and ==?", "assign-vs-compare"),
        (
            "why does my function remember the list from the previous call? default list",
            ("mutable-default-argument"),
        ),
        (
            "I remove items from a list in a for loop and some are skipped",
            ("modify-list-while-iterating"),
        ),
        ("why is 7 // 2 equal to 3", "integer-division"),
        ("range doesn't include the last number?", "range-off-by-one"),
        ("why doesn't my string change after calling upper()", "string-immutable"),
        ("I get a KeyError, should I use get?", "keyerror-vs-get"),
        ("why is 0.1 + 0.2 equal to 0.30000000000000004", "float-precision"),
        ("what does if __name__ == '__main__' do", "name-main"),
        ("my generator is empty the second time I loop", "generator-used-up"),
        ("RecursionError: maximum recursion depth exceeded", "recursion-error"),
        ('TypeError: can only concatenate str (not "int") to str', "concatenate-str-and-int"),
        ("what is self in a class", "what-is-self"),
        ("why does my recursive function return None", "recursion-returns-none"),
    ],
)
def test_classic_questions_find_their_answer(
    library: Library, question: str, expected: str
) -> None:
    found = match_question(library, question)
    assert found is not None and found.question_id == expected


def test_questions_without_a_classic_answer_match_nothing(library: Library) -> None:
    assert match_question(library, "how do I make a web server") is None
    assert match_question(library, "") is None


@pytest.mark.parametrize(
    ("question", "topic"),
    [
        ("how do list comprehensions work?", Topic.COMPREHENSIONS),
        ("what is a dictionary", Topic.COLLECTIONS),
        ("explain recursion to me", Topic.RECURSION),
        ("how do I write a unit test with pytest", Topic.TESTING),
        ("how do I open and read a file", Topic.FILES),
        ("what is inheritance", Topic.CLASSES_AND_OBJECTS),
        ("what does yield do in a generator", Topic.ITERATORS_AND_GENERATORS),
        ("how do while loops work", Topic.CONTROL_FLOW),
    ],
)
def test_topics_are_detected_from_keywords(library: Library, question: str, topic: Topic) -> None:
    assert detect_topic(library, question) is topic


def test_resolve_explicit_topic_wins(library: Library) -> None:
    asked = "why does my for loop print the last item twice?"
    found = resolve(library, None, asked)
    assert found is not None and found.topic is Topic.CONTROL_FLOW
    assert found.question is not None and found.question.question_id == "loop-last-item-twice"
    pinned = resolve(library, Topic.FUNCTIONS, asked)
    assert pinned is not None and pinned.topic is Topic.FUNCTIONS and pinned.question is None
    plain = resolve(library, Topic.STRINGS, "")
    assert plain is not None and plain.question is None


def test_resolve_without_a_topic_needs_a_recognisable_question(library: Library) -> None:
    assert resolve(library, None, "") is None
    assert resolve(library, None, "   ") is None
    assert resolve(library, None, "what is the weather like tomorrow") is None
