"""Friendly checks on the host before a program runs: syntax errors and disallowed imports.

This is pedagogy, not security (import blocklists are bypassed in a few
lines). It lets a student see "line 3: expected ':'" with a caret instead of a sandbox run,
and tells them early that an exercise does not allow `import requests`. The sandbox is
what actually contains the program.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

from services.kit import pyast

FILENAME = "main.py"


@dataclass(frozen=True, slots=True)
class PrecheckFailure:
    kind: Literal["syntax_error", "disallowed_import"]
    message: str
    line: int  # 1-based
    column: int  # 1-based, in characters
    excerpt: str  # the offending line and a caret line under the column, ready to print
    module: str = ""  # the disallowed module, as written


def precheck(code: str, allowed_imports: Sequence[str] | None) -> PrecheckFailure | None:
    """The first problem in `code`, or None.

    `allowed_imports` None means no import restriction; an empty sequence means no imports
    at all. An allowed name covers its submodules ("os" allows "os.path").
    """
    try:
        tree = pyast.parse_module(code, FILENAME)
    except SyntaxError as exc:  # IndentationError and TabError included
        return _syntax_failure(code, exc)
    except ValueError as exc:  # some 3.11 releases: "source code string cannot contain null bytes"
        line, column = _position_of(code, code.find("\0"))
        return _failure(code, "syntax_error", f"SyntaxError: {exc}", line, column)
    if allowed_imports is None:
        return None
    allowed = tuple(name.strip() for name in allowed_imports if name.strip())
    lines = code.splitlines()
    hits = sorted(_imports(tree), key=lambda hit: (hit.line, hit.byte_column))
    for hit in hits:
        if any(_is_allowed(candidate, allowed) for candidate in hit.candidates):
            continue
        if allowed:
            why = f"this exercise allows only these imports: {', '.join(sorted(allowed))}"
        else:
            why = "this exercise does not allow any imports"
        text = lines[hit.line - 1] if 0 < hit.line <= len(lines) else ""
        # ast columns are UTF-8 byte offsets; the caret needs characters.
        column = len(text.encode()[: hit.byte_column].decode(errors="ignore")) + 1
        message = f"import of '{hit.module}' is not allowed: {why}"
        return _failure(code, "disallowed_import", message, hit.line, column, module=hit.module)
    return None


def _syntax_failure(code: str, exc: SyntaxError) -> PrecheckFailure:
    line, column = exc.lineno or 1, exc.offset or 1
    if exc.lineno is None and "\0" in code:  # the null-byte error carries no position
        line, column = _position_of(code, code.find("\0"))
    end = exc.end_offset if exc.end_lineno == exc.lineno and exc.end_offset else None
    message = f"{type(exc).__name__}: {exc.msg}"
    return _failure(code, "syntax_error", message, line, column, end_column=end)


def _failure(
    code: str,
    kind: Literal["syntax_error", "disallowed_import"],
    message: str,
    line: int,
    column: int,
    *,
    module: str = "",
    end_column: int | None = None,
) -> PrecheckFailure:
    lines = code.splitlines() or [""]
    line = min(max(line, 1), len(lines))
    text = lines[line - 1].replace("\0", "\u2400")  # a visible stand-in for a null byte
    column = min(max(column, 1), len(text) + 1)
    width = max(1, (end_column or column + 1) - column)
    width = min(width, max(1, len(text) + 1 - column))
    # Keep tabs in the padding so the caret lines up however the terminal expands them.
    pad = "".join("\t" if ch == "\t" else " " for ch in text[: column - 1])
    return PrecheckFailure(kind, message, line, column, f"{text}\n{pad}{'^' * width}", module)


def _position_of(code: str, index: int) -> tuple[int, int]:
    before = code[: max(index, 0)]
    return before.count("\n") + 1, len(before) - (before.rfind("\n") + 1) + 1


@dataclass(frozen=True, slots=True)
class _Import:
    module: str  # as written
    candidates: tuple[str, ...]  # the import is allowed if any of these is
    line: int
    byte_column: int


def _imports(tree: ast.Module) -> Iterator[_Import]:
    """Every import the code states literally, with where to point the caret."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield _Import(alias.name, (alias.name,), alias.lineno, alias.col_offset)
        elif isinstance(node, ast.ImportFrom):
            # Relative imports fail at run time on their own (a single-file program has no
            # package); __future__ is a compiler directive, not a module the program uses.
            if node.level or node.module is None or node.module == "__future__":
                continue
            # `from x import y` is allowed when x is, or when x.y is (y may be a submodule).
            subs = tuple(f"{node.module}.{a.name}" for a in node.names if a.name != "*")
            yield _Import(node.module, (node.module, *subs), node.lineno, node.col_offset)
        elif isinstance(node, ast.Call) and _is_dynamic_import(node.func) and node.args:
            first = node.args[0]
            literal = first.value if isinstance(first, ast.Constant) else None
            if isinstance(literal, str) and literal and not literal.startswith("."):
                yield _Import(literal, (literal,), first.lineno, first.col_offset)


def _is_dynamic_import(func: ast.expr) -> bool:
    """__import__(...), builtins.__import__(...), importlib.import_module(...), or a bare
    import_module(...) after `from importlib import import_module`."""
    if isinstance(func, ast.Name):
        return func.id in ("__import__", "import_module")
    if isinstance(func, ast.Attribute):
        return func.attr in ("__import__", "import_module")
    return False


def _is_allowed(module: str, allowed: tuple[str, ...]) -> bool:
    return any(module == name or module.startswith(name + ".") for name in allowed)
