"""Suggestions: the linter's fixes and the formatter's layout as before/after on whole
lines (applying one removes its finding), and the checks a model's suggestion must pass."""

from __future__ import annotations

import ast

import pytest

from services.review.domain.linter import Edit, Position, RuffLinter
from services.review.domain.model import Origin, Span, Suggestion
from services.review.domain.review import review_code
from services.review.domain.suggestions import apply, apply_edits, model_suggestion
from tests.review.samples import BAD


def rules_at(code: str, linter: RuffLinter) -> set[tuple[str, int]]:
    return {(f.rule, f.span.line) for f in review_code(code, linter).findings}


def suggestion_titled(code: str, linter: RuffLinter, text: str) -> Suggestion:
    review = review_code(code, linter)
    matches = [s for s in review.suggestions if text in s.title]
    assert len(matches) == 1, [s.title for s in review.suggestions]
    return matches[0]


def test_unused_import_fix_has_exact_before_and_after(linter: RuffLinter) -> None:
    code = "import os\nimport json\n\nprint(os.sep)\n"
    fix = suggestion_titled(code, linter, "json")
    # The removed line is shown with a line next to it (not the blank one after it), so
    # the change has a place.
    assert (fix.before, fix.after) == ("import os\nimport json", "import os")
    assert (fix.span.line, fix.span.end_line) == (1, 2)
    assert fix.origin == Origin.LINTER
    assert "unused import" in fix.rationale.lower()
    fixed = apply(code, fix)
    assert fixed == "import os\n\nprint(os.sep)\n"
    assert rules_at(fixed, linter) == set()


def test_none_comparison_fix(linter: RuffLinter) -> None:
    code = "value = None\nif value == None:\n    print('empty')\n"
    fix = suggestion_titled(code, linter, "is None")
    assert (fix.before, fix.after) == ("if value == None:", "if value is None:")
    assert (fix.span.line, fix.span.end_line) == (2, 2)
    assert ("E711", 2) not in rules_at(apply(code, fix), linter)


def test_layout_suggestions_come_from_ruff_format(linter: RuffLinter) -> None:
    code = "import math\ndef area(r):\n    return math.pi*r**2\nprint(area(2))\n"
    found = rules_at(code, linter)
    assert {("E302", 2), ("E226", 3), ("E305", 4)} <= found
    review = review_code(code, linter)
    layout = [s for s in review.suggestions if "PEP 8" in s.title]
    assert layout, [s.title for s in review.suggestions]
    fixed = code
    for suggestion in sorted(layout, key=lambda s: s.span.line, reverse=True):
        assert suggestion.before == "\n".join(
            code.split("\n")[suggestion.span.line - 1 : suggestion.span.end_line]
        )
        fixed = apply(fixed, suggestion)
    assert fixed == "import math\n\n\ndef area(r):\n    return math.pi * r**2\n\n\nprint(area(2))\n"
    assert rules_at(fixed, linter) == set()


def test_a_file_with_bad_spacing_everywhere_gets_readable_layout_suggestions(
    linter: RuffLinter,
) -> None:
    code = "".join(f"x{i}=[{i},{i}]\n" for i in range(30))
    review = review_code(code, linter)
    layout = [s for s in review.suggestions if "PEP 8" in s.title]
    assert layout and all(s.span.end_line - s.span.line < 8 for s in layout)
    first = layout[0]
    assert first.before.split("\n")[0] == "x0=[0,0]"
    assert first.after.split("\n")[0] == "x0 = [0, 0]"


def test_applying_each_suggestion_removes_its_finding(linter: RuffLinter) -> None:
    review = review_code(BAD, linter)
    assert review.suggestions
    before = rules_at(BAD, linter)
    for suggestion in review.suggestions:
        fixed = apply(BAD, suggestion)
        ast.parse(fixed)  # every suggestion leaves valid Python
        after = rules_at(fixed, linter)
        lines = range(suggestion.span.line, suggestion.span.end_line + 1)
        gone = {rule for rule, line in before - after if line in lines}
        # Lines shift when a fix removes one, so compare by rule: the fixed rule is gone
        # from the file and nothing new appeared.
        assert gone, suggestion.title
        assert {rule for rule, _ in after} <= {rule for rule, _ in before}
    titles = {s.title for s in review.suggestions}
    assert any("unused import" in t.lower() for t in titles)  # F401
    assert any("is None" in t for t in titles)  # E711
    assert any("PEP 8" in t for t in titles)  # E225 via ruff format


def test_suggestions_are_ordered_most_severe_first(linter: RuffLinter) -> None:
    review = review_code(BAD, linter)
    ranks = [
        max(f.severity for f in review.findings if s.span.line <= f.span.line <= s.span.end_line)
        for s in review.suggestions
    ]
    assert len(ranks) >= 3 and ranks == sorted(ranks, reverse=True)


def test_apply_edits_counts_columns_in_characters() -> None:
    code = 'name = "Zoë";x=1\n'
    edits = [Edit(" ", Position(1, 14), Position(1, 14))]
    assert apply_edits(code, edits) == 'name = "Zoë"; x=1\n'
    # An edit that removes a whole last line ends past the final newline.
    assert apply_edits("a = 1\nb = 2\n", [Edit("", Position(2, 1), Position(3, 1))]) == "a = 1\n"


# -- model suggestions --------------------------------------------------------------

CODE = """\
def total(values):
    result = 0
    for i in range(len(values)):
        result = result + values[i]
    return result


print(total([1, 2, 3]))
"""


def test_a_valid_model_suggestion_is_kept_on_whole_lines() -> None:
    kept = model_suggestion(
        CODE,
        title="Loop over the values directly",
        before="    for i in range(len(values)):\n        result = result + values[i]",
        after="    for value in values:\n        result += value",
        rationale="Indexing is not needed to visit each item.",
        line=3,
    )
    assert kept is not None and kept.origin == Origin.MODEL
    assert kept.span == Span(line=3, column=1, end_line=4, end_column=35)
    fixed = apply(CODE, kept)
    assert "for value in values:\n        result += value\n" in fixed
    ast.parse(fixed)


def test_a_partial_line_before_is_widened_to_the_whole_line() -> None:
    kept = model_suggestion(
        CODE,
        title="Use augmented assignment",
        before="result = result + values[i]",
        after="result += values[i]",
        rationale="Shorter.",
        line=4,
    )
    assert kept is not None
    assert kept.before == "        result = result + values[i]"
    assert kept.after == "        result += values[i]"


@pytest.mark.parametrize(
    ("before", "after"),
    [
        ("for x in values:", "for value in values:"),  # before is not in the code
        ("    return result", "    return result +"),  # after does not parse
        ("    return result", "return result"),  # parses alone, not in place
        ("   ", "x = 1"),  # nothing to replace
        ("    return result", "    return result"),  # no change
    ],
)
def test_an_invalid_model_suggestion_is_dropped(before: str, after: str) -> None:
    assert (
        model_suggestion(CODE, title="t", before=before, after=after, rationale="r", line=5) is None
    )


def test_the_occurrence_nearest_the_model_line_is_used() -> None:
    code = "x = 1\nprint(x)\ny = 2\nprint(x)\n"
    kept = model_suggestion(
        code, title="t", before="print(x)", after="print(y)", rationale="r", line=4
    )
    assert kept is not None and kept.span.line == 4


def test_for_code_that_does_not_parse_the_after_must_parse_on_its_own() -> None:
    broken = "def f(:\n    return 1\n"
    fixed = model_suggestion(
        broken, title="t", before="def f(:", after="def f():", rationale="r", line=1
    )
    assert fixed is not None and fixed.after == "def f():"
    assert (
        model_suggestion(broken, title="t", before="def f(:", after="def f(", rationale="r", line=1)
        is None
    )


def test_a_fragment_that_parses_alone_is_kept_when_the_rest_is_still_broken() -> None:
    broken = "def f(:\n    return 1\nitems = [1, 2\n"
    kept = model_suggestion(
        broken, title="t", before="items = [1, 2", after="items = [1, 2]", rationale="r", line=3
    )
    assert kept is not None and kept.span.line == 3
