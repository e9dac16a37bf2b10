"""The quality score, 0-100: a fixed formula over the findings and the code's size.

    points  = sum over findings of WEIGHT[severity]   (info 1, warning 3, error 8)
    units   = max(lines_of_code, 20) / 20             (lines holding code: not blank,
                                                       comment-only or docstring lines)
    density = points / units                          (penalty points per 20 lines)
    score   = round_half_up(100 * exp(-density / 15)), in 0..100

    Code that does not parse scores 0: it cannot run, and nothing else can be measured.

Properties the tests hold it to:
- Deterministic: the same code always gets the same findings and so the same score.
- Monotone: a finding only ever adds points, a worse severity adds more, and exp is
  decreasing, so more or worse findings never raise the score.
- Normalised by length: the penalty is per 20 lines, so a 200-line file with the same
  rate of problems as a 20-line one scores the same; it is not punished for being long.
  Code shorter than 20 lines is judged as 20 lines, so one slip in a 3-line snippet
  does not weigh like ten. Comments and docstrings are not lines of code here, so
  padding a file with them does not dilute its findings.
- Readable: clean code scores 100; in 20 lines, one info (a layout nit) gives 94, one
  warning (an unused variable, a bare except, a complex function) 82, one error (an
  undefined name) 59; about three warnings per 20 lines bring it near 55.

The model's prose never enters this formula: only the linter's and radon's findings do.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from services.review.domain.model import Finding, Severity

WEIGHT: dict[Severity, float] = {Severity.INFO: 1.0, Severity.WARNING: 3.0, Severity.ERROR: 8.0}
LINES_PER_UNIT = 20
DECAY = 15.0


def penalty_points(findings: Iterable[Finding]) -> float:
    return sum(WEIGHT[f.severity] for f in findings)


def quality_score(findings: Iterable[Finding], lines_of_code: int, *, parses: bool = True) -> int:
    if not parses:
        return 0
    units = max(lines_of_code, LINES_PER_UNIT) / LINES_PER_UNIT
    density = penalty_points(findings) / units
    score = math.floor(100.0 * math.exp(-density / DECAY) + 0.5)
    return max(0, min(100, score))
