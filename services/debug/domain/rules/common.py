"""What every rule shares: the advice it returns, the error in its program, and helpers
for wording and for building checked fixes."""

from __future__ import annotations

import ast
import builtins
import difflib
import itertools
import re
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from services.debug.domain.edits import (
    Fix,
    Program,
    compiles,
    fixes_syntax_at,
    function_at,
    node_span,
    syntax_error_at,
    walk,
    wrap_node,
)
from services.debug.domain.traceback import ParsedError

BUILTIN_NAMES = frozenset(name for name in dir(builtins) if not name.startswith("_"))
STDLIB_MODULES = frozenset(
    name for name in getattr(sys, "stdlib_module_names", ()) if not name.startswith("_")
)
COMPREHENSIONS = (ast.ListComp, ast.SetComp, ast.GeneratorExp, ast.DictComp)
# Syntax fixes try candidates by compiling the whole program (about 1 ms per 1,000
# lines); a bounded number keeps a 64 KiB program's worst case well under a second.
MAX_CANDIDATES = 16


@dataclass(frozen=True, slots=True)
class Advice:
    """What the hint levels say for one error.

    `general` names the kind of problem in plain words (never code); `specific` points
    at the line, name or value and what is wrong with it; the solution level shows `fix`
    (a checked correction of the whole program) with `explanation`, or else `words`.
    """

    general: str
    specific: str
    fix: Fix | None = None
    words: str = ""
    explanation: str = ""


@dataclass(frozen=True, slots=True)
class Finding:
    """What a rule found out about one error: why it happens, and how to fix it."""

    why: str
    fix: Fix | None = None
    words: str = ""


@dataclass(slots=True)
class Ctx:
    """An error in its program, with the helpers rules use to look at the failing line."""

    error: ParsedError
    program: Program
    causes: Sequence[ParsedError] = ()

    @property
    def chained(self) -> bool:
        return bool(self.causes)

    @property
    def line(self) -> int | None:
        return self.error.line

    @property
    def text(self) -> str:
        """The offending line as in the program (or as the traceback showed it)."""
        own = self.program.line(self.error.line)
        return own if own.strip() else self.error.source_line

    @property
    def tree(self) -> ast.Module | None:
        return self.program.tree

    def quote(self) -> str:
        """The offending line quoted for the specific hint."""
        text = self.text.strip()
        return f"`{text}`" if text else "that line"

    def specific(self, why: str) -> str:
        return f"Line {self.line}: {self.quote()}. {why}"

    def nodes(
        self, kinds: type[ast.AST] | tuple[type[ast.AST], ...], *, starting: bool = False
    ) -> list[ast.AST]:
        """Nodes of `kinds` on the offending line (for statements with a body, those
        starting on it when `starting`), the one the carets mark first."""
        if self.tree is None or self.line is None:
            return []
        found = [
            node
            for node in walk(self.tree)
            if isinstance(node, kinds)
            and getattr(node, "lineno", None) == self.line
            and (starting or getattr(node, "end_lineno", None) == self.line)
        ]
        found.sort(key=lambda n: (getattr(n, "col_offset", 0), -getattr(n, "end_col_offset", 0)))
        return sorted(found, key=self._caret_distance) if self.error.column else found

    def _caret_distance(self, node: ast.AST) -> tuple[int, int]:
        """0 for the node the carets mark exactly, 1 for one that covers them."""
        column, end = self.error.column or 0, self.error.end_column
        span = node_span(self.program, node)
        if span is None:
            return (10**6, 0)
        start, stop = span[1] + 1, span[3]
        if end is None:
            return (0 if start <= column <= stop else 10**5, stop - start)
        if start == column and stop == end:
            return (0, stop - start)
        return (1 if start <= column and end <= stop else 10**5, stop - start)

    def function(self) -> ast.FunctionDef | ast.AsyncFunctionDef | None:
        if self.tree is None or self.line is None:
            return None
        return function_at(self.tree, self.line)

    def replace_line(
        self, new_line: str | None, summary: str, line: int | None = None
    ) -> Fix | None:
        """The program with one line replaced, when it compiles."""
        number = line or self.line
        if number is None or new_line is None or new_line == self.program.line(number):
            return None
        return checked(self.program.replace(number, number, [new_line], summary))

    def guard_statement(self, condition: str, summary: str) -> Fix | None:
        """The offending (one-line) statement put under `if condition:`."""
        if not self.line:
            return None
        indent = self.text[: len(self.text) - len(self.text.lstrip())]
        unit = self.program.indent_unit()
        lines = [f"{indent}if {condition}:", f"{indent}{unit}{self.text.strip()}"]
        return checked(self.program.replace(self.line, self.line, lines, summary))

    def convert(self, node: ast.expr, function: str, summary: str) -> Fix | None:
        """The line with `node` wrapped in a call to `function` (e.g. `str(age)`)."""
        return self.replace_line(wrap_node(self.program, node, f"{function}(", ")"), summary)


Handler = Callable[[Ctx, re.Match[str]], Finding]


def dispatch(
    ctx: Ctx, handlers: Sequence[tuple[str, Handler]], default: Callable[[Ctx], Finding]
) -> Finding:
    """The finding of the first handler whose pattern matches the error's message."""
    for pattern, handler in handlers:
        found = re.search(pattern, ctx.error.message)
        if found:
            return handler(ctx, found)
    return default(ctx)


def code(text: str) -> str:
    return f"`{text}`"


def block(source: str) -> str:
    return f"```python\n{source.rstrip()}\n```"


def example(lead: str, source: str) -> str:
    return f"{lead}\n\n{block(source)}"


def a(kind: str) -> str:
    """A type named for a beginner: "a string (text)", "an integer"."""
    names = {
        "str": "a string (text)",
        "int": "an integer",
        "float": "a float (a decimal number)",
        "NoneType": "`None`",
        "list": "a list",
        "dict": "a dict",
        "tuple": "a tuple",
        "bool": "a boolean",
        "set": "a set",
        "function": "a function",
        "builtin_function_or_method": "a built-in function",
    }
    return names.get(kind, f"a `{kind}` value")


def capitalised(text: str) -> str:
    return text[:1].upper() + text[1:]


def first_binding(tree: ast.AST, name: str) -> int | None:
    """The first line that assigns or defines `name`."""
    lines = [
        node.lineno
        for node in walk(tree)
        if (isinstance(node, ast.Name) and node.id == name and isinstance(node.ctx, ast.Store))
        or (isinstance(node, ast.FunctionDef | ast.ClassDef) and node.name == name)
    ]
    return min(lines) if lines else None


def close_name(name: str, candidates: Iterable[str], cutoff: float = 0.75) -> str:
    """The candidate `name` was most likely meant to be: the same but for capitals, or
    close in spelling ("" when none is close enough)."""
    pool = sorted({c for c in candidates if c != name})
    for candidate in pool:
        if candidate.lower() == name.lower():
            return candidate
    if len(name) < 3:
        return ""
    found = difflib.get_close_matches(name, pool, n=1, cutoff=cutoff)
    return found[0] if found else ""


def checked(fix: Fix | None, line: int | None = None) -> Fix | None:
    """The fix when it is well-formed: it compiles (past `line`, for syntax fixes)."""
    if fix is None:
        return None
    if line is not None:
        return fix if fixes_syntax_at(fix.fixed_code, line) else None
    return fix if compiles(fix.fixed_code) else None


def first_syntax_fix(
    ctx: Ctx, candidates: Iterable[tuple[str, str]], line: int | None = None
) -> Fix | None:
    """The first candidate line that makes the program valid up to and past `line`."""
    number = line or ctx.line
    if number is None:
        return None
    fixes = (
        ctx.program.replace(number, number, [new_line], summary)
        for new_line, summary in candidates
        if new_line != ctx.program.line(number)
    )
    return best_syntax_fix(fixes, number)


def best_syntax_fix(fixes: Iterable[Fix], line: int) -> Fix | None:
    """The first fix that compiles; failing that, the first whose first syntax error is
    past `line` (the student's next mistake, not one the fix made). Each candidate is a
    compile of the whole program, so only the first MAX_CANDIDATES are tried."""
    fallback: Fix | None = None
    for fix in itertools.islice(fixes, MAX_CANDIDATES):
        found = syntax_error_at(fix.fixed_code)
        if found is None:
            return fix
        if fallback is None and found > line:
            fallback = fix
    return fallback
