"""SyntaxError, IndentationError and TabError: the program never started.

Messages differ by version (3.8's "invalid syntax" and "EOL while scanning string
literal" became "expected ':'" and "unterminated string literal" in 3.10), so each rule
matches the old and the new wording, and the fallback for a bare "invalid syntax" tries
the common slips one after another. A syntax fix is kept only when the program then
compiles, or its first remaining error is further down (the student's next mistake).
"""

from __future__ import annotations

import keyword
import re

from services.debug.domain.edits import (
    CLOSERS,
    Fix,
    Program,
    code_without_comment,
    indent_of,
    unclosed_brackets,
    unterminated_quote,
)
from services.debug.domain.rules.common import (
    MAX_CANDIDATES,
    Advice,
    Ctx,
    Finding,
    Handler,
    best_syntax_fix,
    block,
    code,
    dispatch,
    first_syntax_fix,
)

COMPOUND = re.compile(r"^(if|elif|else|for|while|def|class|try|except|finally|with)\b")
# A single `=` (not part of ==, <=, +=, := ...).
_SINGLE_EQUALS = re.compile(r"(?<![=!<>:+\-*/%&|^@])=(?!=)")
_SMART = {"\u201c": '"', "\u201d": '"', "\u2018": "'", "\u2019": "'", "\u2013": "-", "\u00d7": "*"}

SYNTAX_GENERAL = (
    "Python could not even start your program: a line is not written the way Python's "
    "grammar expects, so nothing ran. These are usually small typing slips, such as a "
    "missing colon, bracket or quote, or a word Python reserves for itself."
)
INDENT_GENERAL = (
    "Python uses the spaces at the start of a line to know which lines belong together "
    "(the body of a loop, an `if` or a function). Here the indentation does not fit: a "
    "block is missing its indented lines, a line is pushed in where nothing opened a "
    "block, or it lines up with no block above it."
)
TAB_GENERAL = (
    "Your program mixes tab characters and spaces to indent lines. They look alike on "
    "screen but Python counts them differently, so it cannot tell which block a line "
    "belongs to."
)


def _closers(opened: list[str]) -> str:
    return "".join(CLOSERS[bracket] for bracket in reversed(opened))


def _colon_candidates(ctx: Ctx) -> list[tuple[str, str]]:
    body, comment = code_without_comment(ctx.text)
    stripped = body.strip()
    out: list[tuple[str, str]] = []
    else_if = re.match(r"^(\s*)else\s+if\b(.*)$", body)
    if else_if:
        rest = else_if.group(2).rstrip()
        rest = rest if rest.endswith(":") else rest + ":"
        out.append((f"{else_if.group(1)}elif{rest}{comment}", "Write *else if* as `elif`."))
    if COMPOUND.match(stripped) and not stripped.endswith(":"):
        out.append((f"{body}:{comment}", "Add the colon that ends the line opening a block."))
    return out


def _missing_colon(ctx: Ctx, _: re.Match[str] | None = None) -> Finding:
    fix = first_syntax_fix(ctx, _colon_candidates(ctx))
    body = ctx.text.strip()
    if re.match(r"else\s+if\b", body):
        return Finding("Python does not understand *else if* written as two words.", fix)
    word = body.split()[0] if body.split() else "this"
    return Finding(
        f"The `{word}` line opens a block, and every line that opens a block must end "
        "with a colon.",
        fix,
    )


def _unterminated(ctx: Ctx, _: re.Match[str]) -> Finding:
    text = ctx.text.rstrip()
    opened = unterminated_quote(text)
    if opened is None:
        return Finding("A string on this line is opened with a quote mark but never closed.")
    start, quote = opened
    # Close it at the end of the line, or before the brackets and colon that end it.
    positions = [len(text)]
    index = len(text)
    while index > start + 1 and text[index - 1] in ")]},:; \t":
        index -= 1
        positions.append(index)
    summary = f"Close the string with the quote mark that opens it ({quote})."
    fix = first_syntax_fix(ctx, [(text[:p] + quote + text[p:], summary) for p in positions])
    return Finding(
        f"The text that starts with the quote mark {code(quote)} at column {start + 1} is "
        "never closed: Python reads to the end of the line looking for the matching quote.",
        fix,
    )


def _never_closed(ctx: Ctx, found: re.Match[str]) -> Finding:
    line = ctx.line or 0
    opened = unclosed_brackets(ctx.program.line(line))
    if not opened:
        return Finding("A bracket opened here is never closed.")
    body, comment = code_without_comment(ctx.program.line(line))
    closers = _closers(opened)
    candidates = [(f"{body}{closers}{comment}", "Close the bracket that was opened.")]
    if body.rstrip().endswith(":"):
        stem = body.rstrip()[:-1]
        candidates.insert(0, (f"{stem}{closers}:{comment}", "Close the bracket before the colon."))
    bracket = found.group(1) or opened[-1]
    return Finding(
        f"The bracket {code(bracket)} opened on line {line} is never closed, so Python keeps "
        "reading the next lines as part of it.",
        first_syntax_fix(ctx, candidates, line),
    )


def _unmatched(ctx: Ctx, found: re.Match[str]) -> Finding:
    closer = found.group(1)
    body, comment = code_without_comment(ctx.text)
    positions = [i for i, ch in enumerate(body) if ch == closer]
    summary = f"Remove the extra {code(closer)}."
    candidates = [(body[:p] + body[p + 1 :] + comment, summary) for p in reversed(positions)]
    return Finding(
        f"There is a closing {code(closer)} with no opening bracket to match it: count the "
        "opening and closing brackets on this line.",
        first_syntax_fix(ctx, candidates),
    )


def _mismatched(ctx: Ctx, found: re.Match[str]) -> Finding:
    wrong, opener = found.group(1), found.group(2)
    right = CLOSERS[opener]
    body, comment = code_without_comment(ctx.text)
    positions = [i for i, ch in enumerate(body) if ch == wrong]
    column = (ctx.error.column or 0) - 1
    if column in positions:  # the one Python's caret points at first
        positions.remove(column)
        positions.insert(0, column)
    summary = f"Close {code(opener)} with {code(right)}."
    candidates = [(body[:p] + right + body[p + 1 :] + comment, summary) for p in positions]
    return Finding(
        f"A bracket opened with {code(opener)} is closed with {code(wrong)}; brackets must be "
        f"closed with their own kind ({code(opener + right)}).",
        first_syntax_fix(ctx, candidates),
    )


def _forgot_comma(ctx: Ctx, _: re.Match[str]) -> Finding:
    body, comment = code_without_comment(ctx.text)
    start = (ctx.error.column or 1) - 1
    stop = ctx.error.end_column or len(body)
    gaps = [m.start() for m in re.finditer(r"(?<=[\w'\")\]}])\s+(?=[\w'\"(\[{])", body)]
    gaps = [g for g in gaps if start <= g <= stop] or gaps
    candidates = [(body[:g] + "," + body[g:] + comment, "Add the missing comma.") for g in gaps]
    return Finding(
        "Two values are written next to each other with nothing between them; the items "
        "of a list, a tuple or a call are separated by commas.",
        first_syntax_fix(ctx, candidates),
    )


def _equals(ctx: Ctx, _: re.Match[str] | None = None) -> Finding:
    body, comment = code_without_comment(ctx.text)
    summary = "Compare with `==`; a single `=` stores a value."
    candidates = [
        (body[: m.start()] + "==" + body[m.end() :] + comment, summary)
        for m in _SINGLE_EQUALS.finditer(body)
    ]
    return Finding(
        "This line uses `=`, which *stores* a value, where it means to *compare* two "
        "values, which is written `==`.",
        first_syntax_fix(ctx, candidates),
    )


def _print_statement(ctx: Ctx, _: re.Match[str] | None = None) -> Finding:
    body, comment = code_without_comment(ctx.text)
    found = re.match(r"^(\s*)print\s+(.*?)\s*$", body)
    fix = None
    if found:
        new = f"{found.group(1)}print({found.group(2)}){comment}"
        fix = first_syntax_fix(ctx, [(new, "`print` is a function: its arguments go in brackets.")])
    return Finding(
        "`print` is a function in Python 3, so what it prints must be inside brackets "
        "right after the word `print`.",
        fix,
    )


def _invalid_character(ctx: Ctx, found: re.Match[str]) -> Finding:
    fixed = "".join(_SMART.get(ch, ch) for ch in ctx.text)
    return Finding(
        f"The character {code(found.group(1))} looks like normal punctuation but is a "
        "different character (often pasted from a document or a web page); Python only "
        "accepts the plain keyboard quotes and symbols.",
        first_syntax_fix(ctx, [(fixed, "Use the plain keyboard characters.")]),
    )


def _outside_function(ctx: Ctx, found: re.Match[str]) -> Finding:
    return Finding(
        f"{code(found.group(1))} can only be used inside a function, and this line is not "
        "indented under a `def`."
    )


def _invalid_syntax(ctx: Ctx) -> Finding:
    """A bare "invalid syntax" (or any other message): the common slips, in order."""
    body, comment = code_without_comment(ctx.text)
    stripped = body.strip()
    word = re.match(r"([A-Za-z_]\w*)\s*=[^=]", stripped)
    if COMPOUND.match(stripped) and not stripped.endswith(":"):
        missing = _missing_colon(ctx)
        if missing.fix:
            return missing
    if re.match(r"(if|elif|while)\b", stripped) and _SINGLE_EQUALS.search(stripped):
        equals = _equals(ctx)
        if equals.fix:
            return equals
    if re.match(r"print\s+[\"'\w]", stripped):
        return _print_statement(ctx)
    if word and keyword.iskeyword(word.group(1)):
        return Finding(
            f"{code(word.group(1))} is one of Python's reserved words, so it cannot be used "
            "as the name of a variable."
        )
    if re.search(r"\b\d+[A-Za-z_]\w*", body):
        return Finding(
            "A name cannot start with a digit, and a number cannot have letters stuck to it."
        )
    opened = unclosed_brackets(body)
    candidates = [(f"{body}{_closers(opened)}{comment}", "Close the bracket.")] if opened else []
    return Finding(
        "Something on this line (or at the end of the line before it) is not valid Python.",
        first_syntax_fix(ctx, candidates),
    )


_HANDLERS: tuple[tuple[str, Handler], ...] = (
    (r"expected ':'", _missing_colon),
    (
        r"unterminated string literal|EOL while scanning string literal"
        r"|unterminated f-string literal",
        _unterminated,
    ),
    (r"'(.)' was never closed|unexpected EOF while parsing", _never_closed),
    (r"unmatched '(.)'", _unmatched),
    (r"closing parenthesis '(.)' does not match opening parenthesis '(.)'", _mismatched),
    (r"forgot a comma", _forgot_comma),
    (
        r"Maybe you meant '==' or ':=' instead of '='|Maybe you meant '==' instead of '='"
        r"|cannot assign to comparison",
        _equals,
    ),
    (r"Missing parentheses in call to 'print'", _print_statement),
    (r"invalid character '(.)' \(U\+[0-9A-F]+\)", _invalid_character),
    (r"'(\w+)' outside function", _outside_function),
)


def syntax_rule(ctx: Ctx) -> Advice:
    finding = dispatch(ctx, _HANDLERS, _invalid_syntax)
    pointer = ""
    if ctx.error.column is not None:
        pointer = f" Python's marker `^` is under column {ctx.error.column}."
    words = (
        f"Rewrite line {ctx.line} so that it follows Python's grammar. {finding.why} "
        "Compare it with lines of the same kind that work, for example:\n\n"
        + block('if total > 10:\n    print("big")\nnames = ["Ann", "Bob"]\nprint(names[0])')
    )
    return Advice(
        general=SYNTAX_GENERAL,
        specific=ctx.specific(f"Python says *{ctx.error.message}*.{pointer} {finding.why}"),
        fix=finding.fix,
        words=words,
    )


# --- indentation ------------------------------------------------------------------------


def _previous_code_line(program: Program, line: int) -> int:
    for number in range(line - 1, 0, -1):
        above = program.line(number).strip()
        if above and not above.startswith("#"):
            return number
    return 0


def _block_lines(program: Program, line: int) -> list[int]:
    """Line `line` and the lines after it that belong with it: the same indentation
    (not opening a block of their own) or deeper."""
    width = len(indent_of(program.line(line)))
    lines = [line]
    for number in range(line + 1, len(program.lines) + 1):
        text = program.line(number)
        if not text.strip():
            continue
        own = len(indent_of(text))
        if own > width or (own == width and not COMPOUND.match(text.strip())):
            lines.append(number)
        else:
            break
    return lines


def _shift_block(ctx: Ctx, line: int, wanted: str, summary: str) -> Fix | None:
    """Re-indents line `line` to `wanted`, and if that is not enough, the lines of its
    block after it, one more at a time (the smallest change that is valid)."""
    program = ctx.program
    old = indent_of(program.line(line))
    block_lines = _block_lines(program, line)[:MAX_CANDIDATES]

    def shifted(count: int) -> Fix:
        chosen = block_lines[:count]
        lines = list(program.lines)
        for number in chosen:
            text = lines[number - 1]
            rest = text[len(old) :] if text.startswith(old) else text.lstrip()
            lines[number - 1] = wanted + rest
        return program.replace(line, chosen[-1], lines[line - 1 : chosen[-1]], summary)

    fixes = (shifted(count) for count in range(1, len(block_lines) + 1))
    return best_syntax_fix(fixes, block_lines[-1])


def _expected_indent(ctx: Ctx, found: re.Match[str]) -> Finding:
    program, line = ctx.program, ctx.line or 0
    header = int(found.group(1)) if found.group(1) else _previous_code_line(program, line)
    wanted = program.indent(header) + program.indent_unit() if header else program.indent_unit()
    return Finding(
        f"Line {header} ends with a colon, so it opens a block, and the lines of that block "
        f"must be indented further than line {header}. Line {line} is not.",
        _shift_block(ctx, line, wanted, "Indent the block under the line that opens it."),
    )


def _unexpected_indent(ctx: Ctx, _: re.Match[str]) -> Finding:
    program, line = ctx.program, ctx.line or 0
    previous = _previous_code_line(program, line)
    wanted = program.indent(previous) if previous else ""
    return Finding(
        f"Line {line} is indented further than the line above it, but nothing opened a new "
        "block there (only a line ending with a colon does).",
        _shift_block(ctx, line, wanted, "Line the statement up with the lines around it."),
    )


def _unindent(ctx: Ctx, _: re.Match[str]) -> Finding:
    program, line, text = ctx.program, ctx.line or 0, ctx.text
    width = len(indent_of(text))
    levels = sorted(
        {
            len(indent_of(program.line(n)))
            for n in range(1, line)
            if program.line(n).strip() and len(indent_of(program.line(n))) < width
        },
        reverse=True,
    )
    candidates = [(" " * level + text.strip(), "Line it up with its block.") for level in levels]
    return Finding(
        f"Line {line} is indented by {width} characters, which matches none of the blocks "
        "above it: it must line up exactly with the line it belongs with.",
        first_syntax_fix(ctx, candidates),
    )


_INDENT_HANDLERS: tuple[tuple[str, Handler], ...] = (
    (r"expected an indented block(?:.* on line (\d+))?", _expected_indent),
    (r"unexpected indent", _unexpected_indent),
    (r"unindent does not match|unexpected unindent", _unindent),
)


def indentation_rule(ctx: Ctx) -> Advice:
    finding = dispatch(
        ctx,
        _INDENT_HANDLERS,
        lambda _: Finding("The indentation of this line does not fit the blocks around it."),
    )
    words = (
        "Indent every line of a block by the same amount (4 spaces is the convention) under "
        "the line with the colon that opens it, and line up the lines of one block exactly:"
        "\n\n" + block('for name in names:\n    print("Hello", name)\n    count += 1\nprint(count)')
    )
    return Advice(
        general=INDENT_GENERAL,
        specific=ctx.specific(f"Python says *{ctx.error.message}*. {finding.why}"),
        fix=finding.fix,
        words=words,
    )


def tab_rule(ctx: Ctx) -> Advice:
    program = ctx.program
    candidates: list[Fix] = []
    for width in (4, 8):
        lines = [
            indent_of(text).replace("\t", " " * width) + text.lstrip() if text.strip() else text
            for text in program.lines
        ]
        candidate = program.with_code(program.join(lines), "Indent with spaces only, 4 a level.")
        if candidate is not None:
            candidates.append(candidate)
    last = max((n for c in candidates for n in c.lines), default=ctx.line or 0)
    fix = best_syntax_fix(candidates, last)
    tabbed = [n for n, text in enumerate(program.lines, 1) if "\t" in indent_of(text)]
    where = ", ".join(str(n) for n in tabbed[:6]) or str(ctx.line)
    return Advice(
        general=TAB_GENERAL,
        specific=ctx.specific(
            f"Python says *{ctx.error.message}*. The lines indented with a tab character "
            f"are: {where}; the others use spaces."
        ),
        fix=fix,
        words=(
            "Re-indent those lines with spaces only (most editors can convert the tabs of "
            "a whole file to spaces), 4 spaces a level:\n\n"
            + block(
                "def total_price(prices):\n    total = 0\n    for p in prices:\n        total += p"
            )
        ),
    )
