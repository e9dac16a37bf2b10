"""Small, checked edits of a student's program, for the solution hint.

Every edit works on the program's lines and returns the whole corrected program with
the lines it changed; `compiles` says whether a candidate is valid Python (bytecode
compile: nothing runs). Names are renamed token by token, so strings, comments and
attribute names are left alone.
"""

from __future__ import annotations

import ast
import functools
import io
import re
import tokenize
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

from services.kit import pyast

# The name candidate programs are compiled under; what Python warns about them (e.g.
# `x is 1`) is not the server log's business.
FIX_FILENAME = "<candidate fix>"
warnings.filterwarnings("ignore", module=re.escape(FIX_FILENAME))
for _category in (SyntaxWarning, DeprecationWarning):
    warnings.filterwarnings("ignore", category=_category, module=re.escape(FIX_FILENAME))

CLOSERS = {"(": ")", "[": "]", "{": "}"}
OPENERS = {value: key for key, value in CLOSERS.items()}


@dataclass(frozen=True, slots=True)
class Fix:
    """A corrected program.

    `corrected_lines` are the new lines (as in `fixed_code`, without indentation) that
    replace or join the student's, `lines` their 1-based numbers in `fixed_code`, and
    `summary` one Markdown sentence saying what changed.
    """

    fixed_code: str
    lines: tuple[int, ...]
    corrected_lines: tuple[str, ...]
    summary: str


class Program:
    """A program's lines, with its syntax tree when it parses."""

    def __init__(self, code: str) -> None:
        self.code = code.replace("\r\n", "\n")
        self.ends_with_newline = self.code.endswith("\n")
        self.lines = self.code.split("\n")
        if self.ends_with_newline:
            self.lines.pop()
        self._tree: ast.Module | None = None
        self._parsed = False

    @property
    def tree(self) -> ast.Module | None:
        if not self._parsed:
            self._parsed = True
            self._tree = _parse(self.code)
        return self._tree

    def line(self, number: int | None) -> str:
        if number is None or number < 1 or number > len(self.lines):
            return ""
        return self.lines[number - 1]

    def join(self, lines: Sequence[str]) -> str:
        text = "\n".join(lines)
        return text + "\n" if self.ends_with_newline else text

    def replace(self, start: int, end: int, new_lines: Sequence[str], summary: str) -> Fix:
        """Lines `start`..`end` (1-based, inclusive; `end = start - 1` inserts before
        `start`) replaced by `new_lines`."""
        lines = [*self.lines[: start - 1], *new_lines, *self.lines[end:]]
        numbers = tuple(range(start, start + len(new_lines)))
        return Fix(
            fixed_code=self.join(lines),
            lines=numbers,
            corrected_lines=tuple(line.strip() for line in new_lines),
            summary=summary,
        )

    def with_code(self, fixed: str, summary: str) -> Fix | None:
        """A fix from a whole new program: its changed lines are found by comparison."""
        new = Program(fixed)
        if new.lines == self.lines:
            return None
        changed: list[int] = []
        if len(new.lines) == len(self.lines):
            changed = [
                i + 1 for i, (a, b) in enumerate(zip(self.lines, new.lines, strict=True)) if a != b
            ]
        else:
            import difflib

            matcher = difflib.SequenceMatcher(a=self.lines, b=new.lines, autojunk=False)
            for tag, _, _, j1, j2 in matcher.get_opcodes():
                if tag in ("replace", "insert"):
                    changed.extend(range(j1 + 1, j2 + 1))
        changed = [n for n in changed if new.lines[n - 1].strip()]
        return Fix(
            fixed_code=new.join(new.lines),
            lines=tuple(changed),
            corrected_lines=tuple(new.lines[n - 1].strip() for n in changed),
            summary=summary,
        )

    def indent(self, number: int) -> str:
        return indent_of(self.line(number))

    def indent_unit(self) -> str:
        """The program's indentation step (4 spaces unless it uses something else)."""
        steps = []
        for line in self.lines:
            width = len(line) - len(line.lstrip(" "))
            if line.strip() and width and not line.startswith("\t"):
                steps.append(width)
        if steps:
            smallest = min(steps)
            if smallest in (2, 3, 4, 8):
                return " " * smallest
        return "    "


# A diagnosis parses the same program for the hints and again for the topic, and rules
# look through its whole tree many times: both are kept for the last few programs (the
# trees are only read, never changed).
@functools.lru_cache(maxsize=32)
def _parse(code: str) -> ast.Module | None:
    try:
        return pyast.parse_module(code, filename=FIX_FILENAME)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None


@functools.lru_cache(maxsize=32)
def walk(tree: ast.AST) -> tuple[ast.AST, ...]:
    """Every node of `tree` (as ast.walk), kept for the trees seen last."""
    return tuple(ast.walk(tree))


def indent_of(line: str) -> str:
    return line[: len(line) - len(line.lstrip())]


def compiles(code: str) -> bool:
    return syntax_error_at(code) is None


def syntax_error_at(code: str) -> int | None:
    """The line of the first syntax error (0 when unknown), or None when it compiles."""
    try:
        compile(code, FIX_FILENAME, "exec", dont_inherit=True)
    except SyntaxError as exc:  # IndentationError and TabError included
        return exc.lineno or 0
    except (ValueError, RecursionError, MemoryError):
        return 0
    return None


def fixes_syntax_at(code: str, line: int) -> bool:
    """True when `code` compiles, or its first syntax error is after `line` (the
    student's next mistake, not this one)."""
    found = syntax_error_at(code)
    return found is None or found > line


def tokens(code: str) -> list[tokenize.TokenInfo]:
    """The program's tokens; [] when it cannot be tokenized."""
    try:
        return list(tokenize.generate_tokens(io.StringIO(code).readline))
    except (tokenize.TokenError, SyntaxError, IndentationError):
        return []


def rename_name(code: str, old: str, new: str, only_line: int | None = None) -> str:
    """Every NAME token `old` (not an attribute after a dot, not a keyword argument)
    becomes `new`; on `only_line` only, when given."""
    found = tokens(code)
    if not found:
        return code
    lines = code.split("\n")
    edits: list[tuple[int, int, int]] = []
    for index, token in enumerate(found):
        if token.type != tokenize.NAME or token.string != old:
            continue
        if only_line is not None and token.start[0] != only_line:
            continue
        before = _previous_significant(found, index)
        after = _next_significant(found, index)
        if before is not None and before.string == ".":
            continue
        if (
            after is not None
            and after.string == "="
            and before is not None
            and before.string in ("(", ",")
            and _inside_call(found, index)
        ):
            continue  # f(old=1): a keyword argument's name
        edits.append((token.start[0], token.start[1], token.end[1]))
    for row, start, end in sorted(edits, reverse=True):
        text = lines[row - 1]
        lines[row - 1] = text[:start] + new + text[end:]
    return "\n".join(lines)


def rename_attribute(code: str, old: str, new: str) -> str:
    """Every `.old` attribute becomes `.new`."""
    found = tokens(code)
    lines = code.split("\n")
    edits: list[tuple[int, int, int]] = []
    for index, token in enumerate(found):
        if token.type == tokenize.NAME and token.string == old:
            before = _previous_significant(found, index)
            if before is not None and before.string == ".":
                edits.append((token.start[0], token.start[1], token.end[1]))
    for row, start, end in sorted(edits, reverse=True):
        text = lines[row - 1]
        lines[row - 1] = text[:start] + new + text[end:]
    return "\n".join(lines)


def _previous_significant(found: list[tokenize.TokenInfo], index: int) -> tokenize.TokenInfo | None:
    for token in reversed(found[:index]):
        if token.type not in (tokenize.NL, tokenize.COMMENT):
            return token
    return None


def _next_significant(found: list[tokenize.TokenInfo], index: int) -> tokenize.TokenInfo | None:
    for token in found[index + 1 :]:
        if token.type not in (tokenize.NL, tokenize.COMMENT):
            return token
    return None


def _inside_call(found: list[tokenize.TokenInfo], index: int) -> bool:
    depth = 0
    for token in reversed(found[:index]):
        if token.type != tokenize.OP:
            continue
        if token.string in ")]}":
            depth += 1
        elif token.string in "([{":
            if depth == 0:
                return token.string == "("
            depth -= 1
    return False


def char_offset(text: str, byte_offset: int) -> int:
    """ast's UTF-8 byte column as a character index into `text`."""
    return len(text.encode("utf-8")[:byte_offset].decode("utf-8", errors="replace"))


def node_span(program: Program, node: ast.AST) -> tuple[int, int, int, int] | None:
    """(line, start char, end line, end char) of a node, character-based."""
    line = getattr(node, "lineno", None)
    end_line = getattr(node, "end_lineno", None)
    start = getattr(node, "col_offset", None)
    end = getattr(node, "end_col_offset", None)
    if line is None or end_line is None or start is None or end is None:
        return None
    return (
        line,
        char_offset(program.line(line), start),
        end_line,
        char_offset(program.line(end_line), end),
    )


def source_of(program: Program, node: ast.AST) -> str:
    """The source text of a single-line node ("" when it spans lines)."""
    span = node_span(program, node)
    if span is None or span[0] != span[2]:
        return ""
    return program.line(span[0])[span[1] : span[3]]


def wrap_node(program: Program, node: ast.AST, before: str, after: str) -> str | None:
    """The node's line with `before`/`after` around the node's text (one line only)."""
    span = node_span(program, node)
    if span is None or span[0] != span[2]:
        return None
    text = program.line(span[0])
    return text[: span[1]] + before + text[span[1] : span[3]] + after + text[span[3] :]


def replace_node(program: Program, node: ast.AST, new_text: str) -> str | None:
    """The node's line with the node's text replaced by `new_text` (one line only)."""
    span = node_span(program, node)
    if span is None or span[0] != span[2]:
        return None
    text = program.line(span[0])
    return text[: span[1]] + new_text + text[span[3] :]


def statement_at(tree: ast.Module, line: int) -> ast.stmt | None:
    """The innermost statement whose lines include `line`."""
    best: ast.stmt | None = None
    for node in walk(tree):
        if isinstance(node, ast.stmt):
            end = node.end_lineno or node.lineno
            if node.lineno <= line <= end and (
                best is None or (node.lineno >= best.lineno and end <= (best.end_lineno or 0))
            ):
                best = node
    return best


def enclosing(tree: ast.Module, line: int, kinds: tuple[type[ast.AST], ...]) -> list[ast.AST]:
    """Nodes of `kinds` whose lines include `line`, outermost first."""
    found = [
        node
        for node in walk(tree)
        if isinstance(node, kinds)
        and getattr(node, "lineno", 0) <= line <= (getattr(node, "end_lineno", 0) or 0)
    ]
    found.sort(key=lambda node: (getattr(node, "lineno", 0), -(getattr(node, "end_lineno", 0))))
    return found


def function_at(tree: ast.Module, line: int) -> ast.FunctionDef | ast.AsyncFunctionDef | None:
    found = enclosing(tree, line, (ast.FunctionDef, ast.AsyncFunctionDef))
    last = found[-1] if found else None
    return last if isinstance(last, ast.FunctionDef | ast.AsyncFunctionDef) else None


def bound_names(tree: ast.AST) -> set[str]:
    """Every name the program binds: assignments, loop targets, parameters, functions,
    classes, imports, `with ... as`, `except ... as`, comprehension targets."""
    names: set[str] = set()
    for node in walk(tree):
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store | ast.Del):
            names.add(node.id)
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.arg):
            names.add(node.arg)
        elif isinstance(node, ast.alias):
            names.add((node.asname or node.name).split(".")[0])
        elif isinstance(node, ast.ExceptHandler) and node.name:
            names.add(node.name)
    return names


def assigned_from_input(tree: ast.AST, name: str) -> bool:
    """True when `name` is assigned straight from input() (a str) somewhere."""
    for node in walk(tree):
        if isinstance(node, ast.Assign) and any(
            isinstance(target, ast.Name) and target.id == name for target in node.targets
        ):
            value = node.value
            if (
                isinstance(value, ast.Call)
                and isinstance(value.func, ast.Name)
                and value.func.id == "input"
            ):
                return True
    return False


def is_simple(node: ast.AST) -> bool:
    """Needs no parentheses when written inside a larger expression."""
    return isinstance(node, ast.Name | ast.Constant | ast.Call | ast.Attribute | ast.Subscript)


def code_without_comment(line: str) -> tuple[str, str]:
    """(code, comment) of one line, the comment with the spaces before it."""
    found = [t for t in tokens(line.strip() + "\n") if t.type == tokenize.COMMENT]
    if not found:
        return line.rstrip(), ""
    indent = indent_of(line)
    stripped = line.strip()
    start = found[0].start[1]
    code = stripped[:start].rstrip()
    return indent + code, line[len(indent) + len(code) :]


def unclosed_brackets(text: str) -> list[str]:
    """The opening brackets of `text` left open, outermost first (strings skipped)."""
    stack: list[str] = []
    quote = ""
    index = 0
    while index < len(text):
        ch = text[index]
        if quote:
            if ch == "\\":
                index += 1
            elif text.startswith(quote, index):
                index += len(quote) - 1
                quote = ""
        elif ch == "#":
            break
        elif ch in "\"'":
            quote = ch * 3 if text.startswith(ch * 3, index) else ch
            index += len(quote) - 1
        elif ch in CLOSERS:
            stack.append(ch)
        elif ch in OPENERS and stack and stack[-1] == OPENERS[ch]:
            stack.pop()
        index += 1
    return stack


def unterminated_quote(text: str) -> tuple[int, str] | None:
    """(index, quote) of the string left open at the end of the line, if any."""
    quote = ""
    opened = -1
    index = 0
    while index < len(text):
        ch = text[index]
        if quote:
            if ch == "\\":
                index += 1
            elif text.startswith(quote, index):
                index += len(quote) - 1
                quote = ""
        elif ch == "#":
            break
        elif ch in "\"'":
            quote = ch * 3 if text.startswith(ch * 3, index) else ch
            opened = index
            index += len(quote) - 1
        index += 1
    return (opened, quote) if quote else None
