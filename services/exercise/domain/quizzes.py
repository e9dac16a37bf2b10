"""Quizzes: choosing questions for a topic and level, and grading answers.

Predict-the-output questions are graded against what their snippet really prints (the
bank test runs every snippet); the student's text is compared with trailing whitespace
removed per line and at the end, so a missing final newline or stray spaces do not cost
a mark, while everything a program would visibly print still has to match.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from services.exercise.domain.bank import Level, QuestionKind, QuizQuestion, Topic

Answer = int | str  # a choice index (multiple choice) or the predicted output text


@dataclass(frozen=True, slots=True)
class QuestionResult:
    question_id: str
    correct: bool
    correct_answer: str  # the right choice's text, or the real output
    explanation: str


@dataclass(frozen=True, slots=True)
class QuizGrade:
    score: float  # correct / total, in [0, 1]
    correct: int
    total: int
    results: tuple[QuestionResult, ...]  # in the order the questions were given


def choose_questions(
    questions: Sequence[QuizQuestion],
    topic: Topic,
    level: Level,
    count: int,
    *,
    seed: int | str,
) -> tuple[QuizQuestion, ...]:
    """Up to `count` questions on `topic`, at `level` first, then at the nearest levels.

    Deterministic given `seed` (e.g. the quiz id), so a quiz can be rebuilt from its
    id. Within each distance from the level the order is shuffled, so two students at
    the same level do not always get the same quiz.
    """
    if count < 1:
        raise ValueError("count must be at least 1")
    rng = random.Random(f"{seed}")  # str seeds hash with SHA-512: stable across runs
    candidates = sorted((q for q in questions if q.topic == topic), key=lambda q: q.question_id)
    keyed = [(abs(q.level - level), rng.random(), q) for q in candidates]
    keyed.sort(key=lambda item: (item[0], item[1]))
    return tuple(q for _, _, q in keyed[:count])


def normalise_output(text: str) -> str:
    """Output as compared: line endings unified, trailing whitespace per line and at the
    end removed (leading whitespace and blank lines inside the output still count)."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    return "\n".join(line.rstrip() for line in lines).rstrip()


def is_correct(question: QuizQuestion, answer: Answer | None) -> bool:
    if question.kind is QuestionKind.MULTIPLE_CHOICE:
        # bool is an int: True must not count as choice 1.
        return (
            isinstance(answer, int)
            and not isinstance(answer, bool)
            and answer == question.answer_index
        )
    return isinstance(answer, str) and normalise_output(answer) == normalise_output(
        question.expected_output
    )


def grade_quiz(questions: Sequence[QuizQuestion], answers: Mapping[str, Answer]) -> QuizGrade:
    """Grades answers keyed by question id; unanswered questions count as wrong, and
    answers to questions not in the quiz are ignored."""
    results = tuple(
        QuestionResult(
            question_id=q.question_id,
            correct=is_correct(q, answers.get(q.question_id)),
            correct_answer=q.correct_answer,
            explanation=q.explanation,
        )
        for q in questions
    )
    correct = sum(r.correct for r in results)
    total = len(results)
    return QuizGrade(
        score=correct / total if total else 0.0,
        correct=correct,
        total=total,
        results=results,
    )
