"""The quality score: the documented formula, monotone, normalised by length, and
deterministic; on plain findings and on real reviews."""

from __future__ import annotations

import itertools
import math
import random

from services.review.domain.linter import RuffLinter
from services.review.domain.model import Category, Finding, Severity, Span
from services.review.domain.review import review_code
from services.review.domain.score import quality_score
from tests.review.samples import BAD, CLEAN, block, blocks


def finding(severity: Severity, line: int = 1) -> Finding:
    return Finding("X1", Category.CORRECTNESS, severity, "x", Span(line))


INFO, WARNING, ERROR = Severity.INFO, Severity.WARNING, Severity.ERROR


def test_the_documented_anchor_values() -> None:
    assert quality_score([], 20) == 100
    assert quality_score([finding(INFO)], 20) == 94
    assert quality_score([finding(WARNING)], 20) == 82
    assert quality_score([finding(ERROR)], 20) == 59
    assert quality_score([finding(WARNING)] * 3, 20) == 55
    # The formula written out: 100 * exp(-(points / units) / 15), rounded half up.
    points, units = 8 + 3 + 1, 45 / 20
    assert quality_score([finding(ERROR), finding(WARNING), finding(INFO)], 45) == math.floor(
        100 * math.exp(-points / units / 15) + 0.5
    )


def test_code_that_does_not_parse_scores_zero() -> None:
    assert quality_score([], 100, parses=False) == 0


def test_short_code_is_judged_as_twenty_lines() -> None:
    assert quality_score([finding(ERROR)], 3) == quality_score([finding(ERROR)], 20)


def test_score_stays_in_range() -> None:
    assert quality_score([finding(ERROR)] * 10_000, 1) == 0
    assert quality_score([], 1_000_000) == 100


def test_more_or_worse_findings_never_raise_the_score() -> None:
    rng = random.Random(20261122)
    severities = list(Severity)
    for _ in range(2000):
        loc = rng.randint(1, 2000)
        current = [finding(rng.choice(severities)) for _ in range(rng.randint(0, 40))]
        base = quality_score(current, loc)
        # One more finding of any severity.
        for severity in severities:
            assert quality_score([*current, finding(severity)], loc) <= base
        # One finding made worse.
        if current:
            i = rng.randrange(len(current))
            worse = Severity(min(ERROR, current[i].severity + 1))
            changed = [*current[:i], finding(worse), *current[i + 1 :]]
            assert quality_score(changed, loc) <= base


def test_every_severity_ordering_is_respected() -> None:
    for a, b in itertools.combinations_with_replacement(list(Severity), 2):
        low, high = min(a, b), max(a, b)
        assert quality_score([finding(high)], 40) <= quality_score([finding(low)], 40)


def test_a_long_file_with_the_same_rate_of_problems_scores_the_same(linter: RuffLinter) -> None:
    short = review_code(block(0), linter)
    long = review_code(blocks(10), linter)
    assert (short.metrics.lines_of_code, long.metrics.lines_of_code) == (20, 200)
    assert [f.rule for f in short.findings] == ["F841"]
    assert [f.rule for f in long.findings] == ["F841"] * 10
    assert long.quality_score == short.quality_score == 82
    # The same ten problems packed into a short file is worse.
    assert quality_score(long.findings, 20) < long.quality_score


def test_real_reviews_order_clean_above_flawed_above_bad(linter: RuffLinter) -> None:
    clean = review_code(CLEAN, linter)
    last_lines = CLEAN[CLEAN.index("marks = [") :]
    flawed_code = CLEAN.replace(last_lines, last_lines.replace("marks", "markList"))
    flawed = review_code(flawed_code, linter)
    bad = review_code(BAD, linter)
    assert clean.quality_score == 100
    assert [f.rule for f in flawed.findings] == ["N816"]  # mixedCase at module level
    assert bad.quality_score < flawed.quality_score < clean.quality_score
    assert bad.quality_score < 50


def test_fixing_a_finding_raises_the_score(linter: RuffLinter) -> None:
    before = review_code(BAD, linter)
    after = review_code(BAD.replace("    print(undefined_name)", "    print(os.name)"), linter)
    assert "F821" not in {f.rule for f in after.findings}
    assert after.quality_score > before.quality_score


def test_the_same_code_always_gets_the_same_review(linter: RuffLinter) -> None:
    first = review_code(BAD, linter)
    for _ in range(3):
        again = review_code(BAD, linter)
        assert again.quality_score == first.quality_score
        assert again.findings == first.findings
        assert again.suggestions == first.suggestions


def test_the_summary_starts_with_the_score_and_the_worst_finding(linter: RuffLinter) -> None:
    bad = review_code(BAD, linter)
    first, start, *rest = bad.summary.split("\n\n")
    assert (
        first
        == f"**Quality {bad.quality_score}/100** · 34 lines of code · 1 error, 6 warnings, 2 notes"
    )
    assert start == "Start with line 40, `F821`: Undefined name `undefined_name`."
    assert any("complexity 12" in part for part in rest)
    clean = review_code(CLEAN, linter)
    assert clean.summary.startswith("**Quality 100/100** · 12 lines of code · no findings")


def test_padding_with_comments_and_docstrings_does_not_dilute_findings(
    linter: RuffLinter,
) -> None:
    plain = review_code(block(0), linter)
    padded_code = block(0).replace(
        "    best = max(scores)\n",
        '    """A long docstring.\n\n    More words.\n    """\n'
        + "    # a comment\n" * 30
        + "    best = max(scores)\n",
    )
    padded = review_code(padded_code, linter)
    assert [f.rule for f in padded.findings] == ["F841"]
    assert padded.metrics.lines_of_code == plain.metrics.lines_of_code == 20
    assert padded.quality_score == plain.quality_score
