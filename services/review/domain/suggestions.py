"""Suggestions with before/after code.

A suggestion always replaces whole lines: `before` is lines `span.line`..`span.end_line`
of the code joined by newlines, `after` what they become (`apply` does it). Linter
suggestions come from ruff's own fixes (its `fix.edits`) and, for layout findings, from
`ruff format`; model suggestions are checked here before they are shown.
"""

from __future__ import annotations

import difflib
import textwrap
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from services.review.domain import rules
from services.review.domain.linter import Diagnostic, Edit, Position
from services.review.domain.metrics import STUDENT_FILENAME
from services.review.domain.model import Finding, Origin, Span, Suggestion

MAX_SUGGESTION_LINES = 20  # a fix touching more lines than this is not shown as one
MAX_MODEL_FIELD_CHARS = 4000
MERGE_LINES = 8  # nearby layout changes are shown together up to this many lines


def _lines(code: str) -> list[str]:
    return code.split("\n")


def apply(code: str, suggestion: Suggestion) -> str:
    """The code with the suggestion's lines replaced by its `after`."""
    lines = _lines(code)
    first, last = suggestion.span.line, suggestion.span.end_line or suggestion.span.line
    return "\n".join([*lines[: first - 1], *_lines(suggestion.after), *lines[last:]])


def _offset(line_starts: list[int], size: int, position: Position) -> int:
    if position.row - 1 >= len(line_starts):
        return size
    return min(size, line_starts[position.row - 1] + position.column - 1)


def apply_edits(code: str, edits: Iterable[Edit]) -> str:
    """ruff's edits (1-based rows, character columns, exclusive ends) applied to code."""
    line_starts = [0]
    for line in _lines(code)[:-1]:
        line_starts.append(line_starts[-1] + len(line) + 1)
    spans = sorted(
        (
            (_offset(line_starts, len(code), e.start), _offset(line_starts, len(code), e.end), e)
            for e in edits
        ),
        key=lambda item: (item[0], item[1]),
        reverse=True,
    )
    for start, end, edit in spans:
        code = code[:start] + edit.content + code[end:]
    return code


def _last_row(edit: Edit) -> int:
    # An edit ending at column 1 of a row stops at the end of the row before it.
    if edit.end.column == 1 and edit.end.row > edit.start.row:
        return edit.end.row - 1
    return edit.end.row


def _widen(lines: list[str], first: int, last: int) -> tuple[int, int] | None:
    """Lines first..last plus one unchanged line of context, so a pure deletion or
    insertion is shown next to a line it touches: the line after, unless it is blank
    and the one before is not."""
    after_ok = last < len(lines)
    before_ok = first > 1
    if after_ok and (lines[last].strip() or not before_ok or not lines[first - 2].strip()):
        return first, last + 1
    if before_ok:
        return first - 1, last
    return None


def _replacement(
    lines: list[str], new_lines: list[str], first: int, last: int
) -> tuple[int, int, str, str] | None:
    """(first, last, before, after) for lines first..last that became the matching
    range of new_lines, widened by a line of context when either side would be empty."""
    delta = len(new_lines) - len(lines)
    if last < first or last + delta < first:
        widened = _widen(lines, first, last)
        if widened is None:
            return None
        first, last = widened
    if last - first + 1 > MAX_SUGGESTION_LINES:
        return None
    before = "\n".join(lines[first - 1 : last])
    after = "\n".join(new_lines[first - 1 : last + delta])
    if before == after:
        return None
    return first, last, before, after


def _parses(code: str) -> bool:
    """Python accepts the code: it parses and compiles (compiling also refuses what the
    parser lets through, such as `return` outside a function)."""
    try:
        compile(code, STUDENT_FILENAME, "exec", dont_inherit=True)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return False
    return True


def _span(lines: list[str], first: int, last: int) -> Span:
    return Span(line=first, column=1, end_line=last, end_column=max(1, len(lines[last - 1])))


def fix_suggestion(code: str, diagnostic: Diagnostic) -> Suggestion | None:
    """The diagnostic's own fix as a suggestion, if it has one that keeps the code valid."""
    fix = diagnostic.fix
    if fix is None or not fix.edits or fix.applicability == "display-only":
        return None
    # Not compiled again here: ruff's edits keep code valid ("unsafe" is about meaning,
    # not syntax; ruff treats a fix that breaks the parse as its own bug), and compiling
    # the whole file per fix would cost more than the rest of the review.
    fixed = apply_edits(code, fix.edits)
    lines, new_lines = _lines(code), _lines(fixed)
    first = min(e.start.row for e in fix.edits)
    last = max(_last_row(e) for e in fix.edits)
    found = _replacement(lines, new_lines, first, min(last, len(lines)))
    if found is None:
        return None
    first, last, before, after = found
    rationale = rules.rationale_for(diagnostic.code, f"{diagnostic.message}.")
    if diagnostic.url:
        rationale += f" ({diagnostic.code}: {diagnostic.url})"
    if fix.applicability != "safe":
        rationale += rules.UNSAFE_NOTE
    return Suggestion(
        title=fix.message or f"Fix {diagnostic.code}",
        before=before,
        after=after,
        rationale=rationale,
        span=_span(lines, first, last),
        origin=Origin.LINTER,
    )


@dataclass(frozen=True, slots=True)
class _Hunk:
    first: int  # 1-based, in the original
    last: int  # inclusive; first - 1 for a pure insertion
    new_first: int
    new_last: int


def _hunks(lines: list[str], new_lines: list[str]) -> list[_Hunk]:
    matcher = difflib.SequenceMatcher(a=lines, b=new_lines, autojunk=False)
    pieces: list[_Hunk] = []
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            continue
        if tag == "replace" and i2 - i1 == j2 - j1:
            # Line-for-line changes (spacing inside lines) split into single lines, so a
            # file with bad spacing everywhere still gets suggestions of readable size.
            pieces.extend(
                _Hunk(i1 + k + 1, i1 + k + 1, j1 + k + 1, j1 + k + 1) for k in range(i2 - i1)
            )
        else:
            pieces.append(_Hunk(i1 + 1, i2, j1 + 1, j2))
    hunks: list[_Hunk] = []
    for hunk in pieces:
        # Changes separated by at most one unchanged line read as one change, up to a
        # size that still reads as one.
        if hunks:
            previous = hunks[-1]
            if hunk.first - previous.last <= 2 and hunk.last - previous.first < MERGE_LINES:
                hunks[-1] = _Hunk(previous.first, hunk.last, previous.new_first, hunk.new_last)
                continue
        hunks.append(hunk)
    return hunks


def layout_suggestions(
    code: str, formatted: str, findings: Sequence[Finding]
) -> tuple[list[Suggestion], set[int]]:
    """One suggestion per changed region of `ruff format`'s output that holds a layout
    finding; also returns the lines those suggestions cover."""
    layout_lines = {f.span.line for f in findings if rules.is_layout(f.rule)}
    if not layout_lines:
        return [], set()
    lines, new_lines = _lines(code), _lines(formatted)
    suggestions: list[Suggestion] = []
    covered: set[int] = set()
    for hunk in _hunks(lines, new_lines):
        first, last, new_first, new_last = hunk.first, hunk.last, hunk.new_first, hunk.new_last
        # A finding about blank lines sits on the line after the inserted/removed ones.
        if not set(range(first, max(first, last) + 2)) & layout_lines:
            continue
        if last < first or new_last < new_first:
            widened = _widen(lines, first, last)
            if widened is None:
                continue
            new_first, new_last = new_first - (first - widened[0]), new_last + (widened[1] - last)
            first, last = widened
        if first < 1 or last - first + 1 > MAX_SUGGESTION_LINES:
            continue
        before = "\n".join(lines[first - 1 : last])
        after = "\n".join(new_lines[new_first - 1 : new_last])
        if before == after:
            continue
        where = f"line {first}" if first == last else f"lines {first}-{last}"
        suggestions.append(
            Suggestion(
                title=f"Lay out {where} as PEP 8 asks",
                before=before,
                after=after,
                rationale=rules.LAYOUT_RATIONALE,
                span=_span(lines, first, last),
                origin=Origin.LINTER,
            )
        )
        covered.update(range(first, last + 1))
    return suggestions, covered


def _place(code: str, before: str, after: str, line: int) -> int | None:
    """Where a model's `before` starts in the code if the replacement holds up."""
    if not before.strip() or before == after:
        return None
    starts = []
    index = code.find(before)
    while index != -1:
        starts.append(index)
        index = code.find(before, index + 1)
    if not starts:
        return None
    start = min(starts, key=lambda i: abs(code.count("\n", 0, i) + 1 - line))
    patched = code[:start] + after + code[start + len(before) :]
    # For code that did not parse to begin with, a fragment that is valid on its own is
    # enough: the rest of the file may still be broken elsewhere.
    valid = _parses(patched) or (not _parses(code) and _parses(textwrap.dedent(after)))
    return start if valid else None


def model_suggestion(
    code: str, *, title: str, before: str, after: str, rationale: str, line: int
) -> Suggestion | None:
    """A model's suggestion if it holds up, else None.

    Kept only when `before` occurs in the code (the occurrence nearest `line` is used)
    and `after` is valid Python in place: the code with the replacement must compile (or,
    for code that did not parse to begin with, `after` on its own). The replaced region
    is widened to whole lines so the suggestion reads and applies like the others.
    """
    before, after = before.strip("\n"), after.strip("\n")
    if max(len(before), len(after), len(title), len(rationale)) > MAX_MODEL_FIELD_CHARS:
        return None
    start = _place(code, before, after, line)
    if start is None:
        return None
    patched = code[:start] + after + code[start + len(before) :]
    first = code.count("\n", 0, start) + 1
    last = code.count("\n", 0, start + len(before)) + 1
    lines = _lines(code)
    found = _replacement(lines, _lines(patched), first, last)
    if found is None:
        return None
    first, last, whole_before, whole_after = found
    return Suggestion(
        title=" ".join(title.split())[:200] or "Suggested change",
        before=whole_before,
        after=whole_after,
        rationale=rationale.strip(),
        span=_span(lines, first, last),
        origin=Origin.MODEL,
    )
