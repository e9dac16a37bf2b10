"""The review's short Markdown comment, written from the findings and metrics."""

from __future__ import annotations

from collections import Counter

from services.review.domain import rules
from services.review.domain.model import Category, Finding, Metrics, Severity, Suggestion

# Which finding to start with among equally severe ones: bugs before tangles before
# names before layout.
_PRIORITY = {
    Category.CORRECTNESS: 4,
    Category.COMPLEXITY: 3,
    Category.READABILITY: 2,
    Category.STYLE: 1,
}
_NOUNS = {Severity.ERROR: "error", Severity.WARNING: "warning", Severity.INFO: "note"}


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def headline(score: int, metrics: Metrics, findings: tuple[Finding, ...]) -> str:
    counts = Counter(f.severity for f in findings)
    parts = [
        _plural(counts[s], _NOUNS[s]) for s in (Severity.ERROR, Severity.WARNING, Severity.INFO)
    ]
    shown = ", ".join(p for p in parts if not p.startswith("0 ")) or "no findings"
    return f"**Quality {score}/100** · {_plural(metrics.lines_of_code, 'line')} of code · {shown}"


def offline_summary(
    score: int,
    metrics: Metrics,
    findings: tuple[Finding, ...],
    suggestions: tuple[Suggestion, ...],
    *,
    parses: bool,
) -> str:
    if not parses:
        first = findings[0]
        return (
            f"**The code does not parse** (line {first.span.line}: {first.message}). "
            "Fix that first: nothing else can be checked until Python can read it. "
            f"Quality {score}/100."
        )
    lines = [headline(score, metrics, findings)]
    if not findings:
        lines.append("Clean: the linter and the complexity check found nothing to change.")
    else:
        worst = max(findings, key=lambda f: (f.severity, _PRIORITY[f.category], -f.span.line))
        lines.append(
            f"Start with line {worst.span.line}, `{worst.rule}`: {worst.message.rstrip('.')}."
        )
    if metrics.max_cyclomatic_complexity > rules.COMPLEXITY_THRESHOLD:
        lines.append(
            f"The most complex block has cyclomatic complexity "
            f"{metrics.max_cyclomatic_complexity}; aim for {rules.COMPLEXITY_THRESHOLD} or "
            "less by splitting it into smaller functions."
        )
    if suggestions:
        lines.append(f"{_plural(len(suggestions), 'suggested change')} below.")
    return "\n\n".join(lines)
