"""Syntax check, size and complexity (radon): the measurements behind the score."""

from __future__ import annotations

import ast
import re
import warnings
from dataclasses import dataclass

from radon.complexity import cc_rank
from radon.metrics import h_visit_ast, mi_compute
from radon.raw import analyze
from radon.visitors import ComplexityVisitor, Function

from services.kit import pyast
from services.review.domain import rules
from services.review.domain.model import Category, Finding, Metrics, Severity, Span

MODULE_BLOCK = "<module>"
# The name student code is parsed and compiled under. Warnings Python raises about it
# while compiling (e.g. `x is 1`) are the review's business, not the server log's.
STUDENT_FILENAME = "<student code>"
for _category in (SyntaxWarning, DeprecationWarning):
    warnings.filterwarnings("ignore", category=_category, module=re.escape(STUDENT_FILENAME))


@dataclass(frozen=True, slots=True)
class SyntaxProblem:
    message: str
    line: int
    column: int


@dataclass(frozen=True, slots=True)
class Block:
    """A function, method or the module body, with its cyclomatic complexity."""

    name: str
    line: int
    end_line: int
    complexity: int


# Parses go through the kit's process-wide lock (cpython#106905); radon may still parse
# on its own elsewhere in the process, so that spurious error is retried.


def parse_tree(code: str) -> ast.Module:
    """ast.parse, safe to call from many threads at once."""
    attempts = 3
    while True:
        attempts -= 1
        try:
            return pyast.parse_module(code, filename=STUDENT_FILENAME)
        except SystemError as exc:
            if attempts == 0 or "recursion depth mismatch" not in str(exc):
                raise


def parse(code: str) -> ast.Module | SyntaxProblem:
    """The code's syntax tree, or why it does not parse (with the line)."""
    try:
        return parse_tree(code)
    except SyntaxError as exc:
        return SyntaxProblem(
            message=f"{type(exc).__name__}: {exc.msg}",
            line=max(1, exc.lineno or 1),
            column=max(1, exc.offset or 1),
        )
    except ValueError as exc:  # e.g. "source code string cannot contain null bytes"
        return SyntaxProblem(message=f"SyntaxError: {exc}", line=1, column=1)
    except (RecursionError, MemoryError):
        return SyntaxProblem(message="SyntaxError: the code is nested too deeply", line=1, column=1)


def syntax_problem(code: str) -> SyntaxProblem | None:
    """Why the code does not parse, or None when it does."""
    parsed = parse(code)
    return parsed if isinstance(parsed, SyntaxProblem) else None


def lines_of_code(code: str) -> int:
    """Lines holding code: not blank, not only a comment. For code that parses, radon's
    `sloc` is used instead, which also leaves out docstrings."""
    return sum(
        1 for line in code.splitlines() if line.strip() and not line.lstrip().startswith("#")
    )


def _functions(functions: list[Function], prefix: str = "") -> list[Block]:
    blocks = []
    for f in functions:
        name = f"{prefix}{f.name}"
        blocks.append(Block(name, f.lineno, f.endline or f.lineno, f.complexity))
        blocks.extend(_functions(f.closures, f"{name}."))
    return blocks


def blocks(code: str) -> list[Block]:
    """Every function, method and nested function, plus the module body."""
    return _blocks(ComplexityVisitor.from_ast(parse_tree(code)), code)


def _blocks(visitor: ComplexityVisitor, code: str) -> list[Block]:
    found = _functions(visitor.functions)
    pending = list(visitor.classes)
    while pending:
        cls = pending.pop(0)
        found.extend(_functions(cls.methods, f"{cls.name}."))
        pending.extend(cls.inner_classes)
    found.append(Block(MODULE_BLOCK, 1, max(1, len(code.splitlines())), visitor.complexity))
    return sorted(found, key=lambda b: (b.line, b.name))


def complexity_findings(measured: list[Block]) -> list[Finding]:
    findings = []
    for block in measured:
        if block.complexity <= rules.COMPLEXITY_THRESHOLD:
            continue
        what = "the module's top-level code" if block.name == MODULE_BLOCK else f"`{block.name}`"
        findings.append(
            Finding(
                rule=rules.COMPLEXITY_RULE,
                category=Category.COMPLEXITY,
                severity=rules.complexity_severity(block.complexity),
                message=(
                    f"{what} is too complex: cyclomatic complexity {block.complexity} "
                    f"(radon rank {cc_rank(block.complexity)}), more than "
                    f"{rules.COMPLEXITY_THRESHOLD}; split it into smaller functions"
                ),
                span=Span(line=block.line, column=1, end_line=block.end_line),
            )
        )
    return findings


def measure(code: str, tree: ast.Module | None = None) -> tuple[Metrics, list[Finding]]:
    """Metrics and complexity findings for code that parses (`tree`: its syntax tree,
    when the caller has it already).

    One parse and one raw count feed everything: the blocks, and the maintainability
    index computed as radon's `mi_visit(code, multi=True)` does (Halstead volume, total
    complexity, logical lines, share of comment lines), without radon parsing again.
    """
    try:
        tree = tree or parse_tree(code)
        raw = analyze(code)
        visitor = ComplexityVisitor.from_ast(tree)
        measured = _blocks(visitor, code)
        comments = (raw.comments + raw.multi) / raw.sloc * 100 if raw.sloc else 0.0
        maintainability = float(
            mi_compute(h_visit_ast(tree).total.volume, visitor.total_complexity, raw.lloc, comments)
        )
    except (RecursionError, SyntaxError, ValueError):
        # Parsed by Python once, but too deep for radon's recursive visitors.
        finding = Finding(
            rule=rules.COMPLEXITY_RULE,
            category=Category.COMPLEXITY,
            severity=Severity.ERROR,
            message="the code is nested too deeply to measure its complexity",
            span=Span(line=1),
        )
        return Metrics(lines_of_code(code), 0, 0.0, 0.0), [finding]
    functions = [b for b in measured if b.name != MODULE_BLOCK]
    # The mean is over functions when there are any (the module body of a file of
    # definitions is trivially 1 and would only dilute it), else the module body.
    averaged = functions or measured
    metrics = Metrics(
        # Comments and docstrings are welcome but are not code: counting them would let
        # padding a file with them dilute its findings.
        lines_of_code=raw.sloc,
        max_cyclomatic_complexity=max(b.complexity for b in measured),
        mean_cyclomatic_complexity=round(sum(b.complexity for b in averaged) / len(averaged), 2),
        maintainability_index=round(max(0.0, min(100.0, maintainability)), 2),
    )
    return metrics, complexity_findings(measured)
