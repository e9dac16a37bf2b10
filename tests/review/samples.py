"""Student code with known problems, and what the review must find in it."""

from __future__ import annotations

# Line numbers matter: the tests assert them.
BAD = """\
import os
import json


def Average(values):
    total=0
    for v in values:
        total += v
    try:
        result = total / len(values)
    except:
        result = 0
    unused = 42
    return result


def classify(n, flag, items, limit):
    if n > 0:
        if flag:
            for item in items:
                if item > limit:
                    while item > 0:
                        if item % 2:
                            item -= 3
                        else:
                            item -= 1
        elif n > 10:
            return "big"
        elif n > 5:
            return "medium"
    elif n < -10:
        return "very negative"
    elif n < 0 and flag:
        return "negative"
    return "other"


print(Average([1, 2, 3]), classify(3, True, [4], 2))
if os.name == None:
    print(undefined_name)
"""

CLEAN = '''\
"""Summaries of a list of exam marks."""


def mean(marks: list[float]) -> float:
    """The average mark, or 0.0 for no marks."""
    if not marks:
        return 0.0
    return sum(marks) / len(marks)


def grade(mark: float) -> str:
    """A letter for a mark out of 100."""
    if mark >= 70:
        return "A"
    if mark >= 50:
        return "B"
    return "C"


marks = [72.5, 48.0, 91.0]
print(mean(marks), [grade(m) for m in marks])
'''


def block(index: int) -> str:
    """20 lines of code with exactly one warning (an unused local variable)."""
    return f"""\
def report_{index}(scores):
    print("report on", len(scores), "scores")
    best = max(scores)
    worst = min(scores)
    spread = best - worst
    leftover_{index} = spread * 2
    total = 0
    count = 0
    for score in scores:
        total += score
        count += 1
    mean = total / count
    print("best", best)
    print("worst", worst)
    print("spread", spread)
    print("mean", mean)
    if mean > 50:
        print("a good set")
    else:
        print("needs work")
"""


def blocks(count: int) -> str:
    return "\n\n".join(block(i) for i in range(count))
