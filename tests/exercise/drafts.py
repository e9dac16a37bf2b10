"""What the scripted model answers in the generation tests (unit, integration and
bench/bench_generation.py): exercise drafts, good and bad, and quiz questions; and an
in-memory stand-in for the store of generated exercises (the Postgres store is
exercised over gRPC in tests/integration/test_exercise_generation.py)."""

from __future__ import annotations

import copy
from typing import Any

from services.exercise.domain.bank import Exercise, Topic
from services.exercise.domain.generation import OwnedExercise

GOOD: dict[str, Any] = {
    "title": "Stock on hand",
    "statement": "Write `stock_of(stock, item)`: how many of `item` the shop has "
    "(`stock` maps items to counts); 0 for an item it does not stock.",
    "entry_points": ["stock_of"],
    "starter_code": "def stock_of(stock, item):\n    return stock[item]\n",
    "visible_tests": [
        {"call": "stock_of({'apple': 3}, 'apple')", "expected": "3", "description": "stocked"},
        {"call": "stock_of({'apple': 3}, 'pear')", "expected": "0", "description": "missing"},
    ],
    "hidden_tests": [
        {"call": "stock_of({}, 'fig')", "expected": "0", "description": "empty shop"},
        {"call": "stock_of({'fig': 0}, 'fig')", "expected": "0", "description": "sold out"},
    ],
    "hints": ["Looking up a missing key raises KeyError.", "dict.get takes a default."],
    "reference_solution": "def stock_of(stock, item):\n    return stock.get(item, 0)\n",
}


def variant(**changes: Any) -> dict[str, Any]:
    draft = copy.deepcopy(GOOD)
    draft.update(changes)
    return draft


# The reference solution forgets missing items: it fails a visible test.
REFERENCE_FAILS = variant(
    reference_solution="def stock_of(stock, item):\n    return stock.get(item)\n"
)
# The starter code is already right (written differently): no test can fail.
STARTER_PASSES = variant(
    starter_code="def stock_of(stock, item):\n    return stock[item] if item in stock else 0\n"
)


SNIPPET = (
    "scores = {'ana': 3}\nscores['bo'] = scores.get('bo', 0) + 1\nprint(len(scores), scores)\n"
)
REAL_OUTPUT = "2 {'ana': 3, 'bo': 1}\n"


PREDICT_WRONG_CLAIM = {
    "kind": "predict_output",
    "prompt": "What does this print?",
    "code": SNIPPET,
    "output": "1 {'ana': 3}",  # the model is wrong
    "explanation": "get does not add keys.",
}
CHOICE = {
    "kind": "multiple_choice",
    "prompt": "Which can be a dictionary key?",
    "options": [
        {"text": "[1, 2]", "correct": False},
        {"text": "(1, 2)", "correct": True},
        {"text": "{1: 2}", "correct": False},
    ],
    "explanation": "Keys must be hashable.",
}
ERRORING = {
    "kind": "predict_output",
    "prompt": "What does this print?",
    "code": "d = {}\nprint(d['x'])\n",
    "output": "None",
    "explanation": "Missing keys give None.",
}
TWO_CORRECT = {
    **CHOICE,
    "prompt": "Which are mutable?",
    "options": [{"text": "list", "correct": True}, {"text": "dict", "correct": True}],
}


class DictStore:
    """Generated exercises kept in memory, with the store's interface: each belongs to
    the tenant it was generated in, and is found in that tenant only."""

    def __init__(self) -> None:
        self.saved: dict[tuple[str, str], OwnedExercise] = {}  # (tenant, exercise id)

    def add_generated(
        self, tenant: str, *, exercise: Exercise, student_id: str, cohort: str, focus_error: str
    ) -> None:
        self.saved[(tenant, exercise.exercise_id)] = OwnedExercise(exercise, student_id, cohort)

    def generated(self, tenant: str, exercise_id: str) -> OwnedExercise | None:
        return self.saved.get((tenant, exercise_id))

    def generated_titles(self, tenant: str, student_id: str, topic: Topic, limit: int) -> list[str]:
        return [
            o.exercise.title
            for (t, _), o in self.saved.items()
            if t == tenant and o.student_id == student_id and o.exercise.topic == topic
        ][:limit]
