"""A whole offline review: linter findings, complexity, score, suggestions, summary."""

from __future__ import annotations

from services.review.domain import rules
from services.review.domain.linter import Diagnostic, RuffLinter
from services.review.domain.metrics import SyntaxProblem, lines_of_code, measure, parse
from services.review.domain.model import (
    Category,
    Finding,
    Metrics,
    Review,
    Severity,
    Span,
    Suggestion,
)
from services.review.domain.score import quality_score
from services.review.domain.suggestions import fix_suggestion, layout_suggestions
from services.review.domain.summary import offline_summary

MAX_LINTER_SUGGESTIONS = 20


def normalise(code: str) -> str:
    """Line endings as "\\n": positions and before/after text are in these terms."""
    return code.replace("\r\n", "\n").replace("\r", "\n")


def finding_of(diagnostic: Diagnostic) -> Finding:
    rule = rules.SYNTAX_ERROR if diagnostic.code == "invalid-syntax" else diagnostic.code
    category = rules.category_of(rule)
    return Finding(
        rule=rule,
        category=category,
        severity=rules.severity_of(rule, category),
        message=diagnostic.message,
        span=Span(
            line=diagnostic.start.row,
            column=diagnostic.start.column,
            end_line=diagnostic.end.row,
            # ruff's end is exclusive; SourceSpan's is inclusive.
            end_column=max(1, diagnostic.end.column - 1),
        ),
    )


def _order(finding: Finding) -> tuple[int, int, str]:
    return (finding.span.line, finding.span.column, finding.rule)


def _suggestions(
    code: str,
    linted: list[tuple[Diagnostic, Finding]],
    findings: tuple[Finding, ...],
    formatted: str | None,
) -> tuple[Suggestion, ...]:
    """The layout suggestions and the linter's own fixes: most severe first, then by
    line; the same change once; at most MAX_LINTER_SUGGESTIONS."""
    ranked: list[tuple[Severity, Suggestion]] = []
    covered: set[int] = set()
    if formatted is not None and any(rules.is_layout(f.rule) for f in findings):
        layout, covered = layout_suggestions(code, formatted, findings)
        ranked.extend((Severity.INFO, s) for s in layout[:MAX_LINTER_SUGGESTIONS])
    # Fixes are made in the order they are shown and only as many as can be shown: a
    # file with thousands of findings costs no more than one with twenty.
    seen: set[tuple[int, str, str]] = set()
    for diagnostic, finding in sorted(linted, key=lambda p: (-p[1].severity, _order(p[1]))):
        if len(seen) == MAX_LINTER_SUGGESTIONS:
            break
        if rules.is_layout(finding.rule) and finding.span.line in covered:
            continue  # the reformat above already shows this line
        suggestion = fix_suggestion(code, diagnostic)
        if suggestion is None or (key := _key(suggestion)) in seen:
            continue
        seen.add(key)
        ranked.append((finding.severity, suggestion))
    ranked.sort(key=lambda pair: (-pair[0], pair[1].span.line))
    unique = list({_key(s): s for _, s in ranked}.values())
    return tuple(unique[:MAX_LINTER_SUGGESTIONS])


def _key(suggestion: Suggestion) -> tuple[int, str, str]:
    return (suggestion.span.line, suggestion.before, suggestion.after)


def review_code(code: str, linter: RuffLinter) -> Review:
    code = normalise(code)
    tree = parse(code)
    if isinstance(tree, SyntaxProblem):
        problem = tree
        finding = Finding(
            rule=rules.SYNTAX_ERROR,
            category=Category.CORRECTNESS,
            severity=Severity.ERROR,
            message=problem.message,
            span=Span(line=problem.line, column=problem.column),
        )
        metrics = Metrics(lines_of_code(code), 0, 0.0, 0.0)
        return Review(
            findings=(finding,),
            suggestions=(),
            metrics=metrics,
            quality_score=0,
            summary=offline_summary(0, metrics, (finding,), (), parses=False),
            parses=False,
        )

    # Both ruff processes run while radon measures here. The formatter's output is only
    # used when there are layout findings, which beginners' code nearly always has.
    checking, formatting = linter.start_check(code), linter.start_format(code)
    metrics, complexity = measure(code, tree)
    linted = [(d, finding_of(d)) for d in checking.result()]
    findings = tuple(sorted([f for _, f in linted] + complexity, key=_order))
    score = quality_score(findings, metrics.lines_of_code)

    chosen = _suggestions(code, linted, findings, formatting.result())
    return Review(
        findings=findings,
        suggestions=chosen,
        metrics=metrics,
        quality_score=score,
        summary=offline_summary(score, metrics, findings, chosen, parses=True),
        parses=True,
    )
