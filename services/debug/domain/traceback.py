"""Reads a Python traceback into the error a student needs to fix.

Handles what CPython 3.8 to 3.13 print for an uncaught exception, colour-free:

- the frames (`File "...", line N, in f`), each with its source line and, from 3.11 on,
  the caret line under it (`~~~^^^`), and 3.13's multi-line source segments;
- SyntaxError, IndentationError and TabError, whose location line has no `, in`, with
  the source line and a caret (a range of carets from 3.10 on);
- chained exceptions ("During handling of the above exception..." and "The above
  exception was the direct cause..."), each block an error of its own;
- "[Previous line repeated N more times]" in recursion;
- "Did you mean: 'x'?" (3.10+), "Did you forget to import 'x'?" (3.12+) and PEP 678
  notes (3.11+), which become `notes` rather than part of the message;
- exception groups (3.11+): the group is the error, its members `sub_errors`.

The line reported is the line in the student's program: the innermost frame whose file
is the student's file, never a frame inside the standard library (a `json.loads` error
points at the student's `json.loads(...)` line). Which file is the student's is decided
by matching the frames' source lines against `code` when it is given, else it is the
first file that is not a library file (the script Python was started with).

Lines and columns are 1-based, end columns inclusive (as in learnflow SourceSpan).
Columns come from the carets; CPython prints source lines without their indentation,
so a column is in the file only when `code` is given, and relative to the source line
as printed otherwise. A message spanning several lines keeps its first line as the
message; the lines after it read as notes (the printed text cannot tell them apart).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace

__all__ = [
    "Frame",
    "ParsedError",
    "ParsedTraceback",
    "is_library_file",
    "parse_traceback",
    "short_type",
]

_ANSI_RE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_HEADER_RE = re.compile(r"(?:Exception Group )?Traceback \(most recent call last\):\s*$")
_FILE_RE = re.compile(
    r'^(?P<indent>\s*)File "(?P<file>[^"\n]+)", line (?P<line>\d+)(?:, in (?P<func>.+?))?\s*$'
)
_CHAIN_RE = re.compile(
    r"^\s*(?:During handling of the above exception, another exception occurred:"
    r"|The above exception was the direct cause of the following exception:)\s*$"
)
_REPEATED_RE = re.compile(r"^\s*\[Previous line repeated (?P<count>\d+) more times?\]\s*$")
_CARET_RE = re.compile(r"^\s*[~^]+(?:\s+[~^]+)*\s*$")
_ELIDED_RE = re.compile(r"^\s*\.\.\.<(?P<count>\d+) lines>\.\.\.\s*$")
# "IndexError: list index out of range", "StopIteration", "json.decoder.JSONDecodeError: …"
_ERROR_LINE_RE = re.compile(
    r"^(?P<type>[A-Za-z_][\w]*(?:\.[A-Za-z_]\w*)*)(?::(?: (?P<message>.*))?)?\s*$"
)
# A name that reads as an exception class, for error lines found without a traceback.
_EXCEPTION_NAME_RE = re.compile(
    r"(?:^|\.)(?:[A-Z]\w*(?:Error|Exception|Warning|Exit|Interrupt|Group)|StopIteration"
    r"|StopAsyncIteration|GeneratorExit)$"
)
# Exception groups (3.11+): a margin of "| " per depth, "+-+---- 1 ----" separators.
_GROUP_LINE_RE = re.compile(r"^(?P<indent>(?:  )+)(?P<mark>[|+])(?: (?P<rest>.*)|$)")
# This level's separators: "  +-+---- 1 ----" first, "    +---- 2 ----" and the
# closing "    +--------" after it (a nested group's start at "    +-+" is a member line).
_GROUP_SEPARATOR_RE = re.compile(r"^  \+-\+-{3,}|^    \+-{3,}")

_SUGGESTION_RES = (
    # 3.12+: "... Did you mean: 'x'? Or did you forget to import 'y'?"
    re.compile(
        r"^(?P<message>.*?)\. (?P<note>Did you mean: '(?P<name>[^']+)'(?: \([^)]*\))?\?"
        r" Or did you forget to import '(?P<module>[\w.]+)'\?)$",
        re.DOTALL,
    ),
    re.compile(
        r"^(?P<message>.*?)\. (?P<note>Did you forget to import '(?P<module>[\w.]+)'\?)$",
        re.DOTALL,
    ),
    # 3.10+: NameError, AttributeError; ImportError from 3.12.
    re.compile(
        r"^(?P<message>.*?)\. (?P<note>Did you mean: '(?P<name>[^']+)'(?: \([^)]*\))?\?)$",
        re.DOTALL,
    ),
    # 3.15: AttributeError "Did you mean '.upper' instead of '.uper'?" and
    # cross-language hints "Did you mean '.append'?".
    re.compile(
        r"^(?P<message>.*?)\. (?P<note>Did you mean '\.(?P<name>\w+)'"
        r"(?: \([^)]*\))?(?: instead of '\.\w+'(?: \([^)]*\))?)?\?)$",
        re.DOTALL,
    ),
)

MAX_LINE = 10_000_000
"""A larger line number in a pasted traceback is not a real one: it is read as unknown.
(It has to fit a SourceSpan's int32 too, with room for a multi-line span after it.)"""
_MAX_COUNT = 1_000_000_000

_SYNTAX_TYPES = frozenset({"SyntaxError", "IndentationError", "TabError"})
_MODULE_LEVEL = "<module>"
# Paths of the interpreter's own code: the standard library and installed packages on
# Linux, macOS (framework and Homebrew builds), Windows, pyenv and conda.
_LIBRARY_RE = re.compile(
    r"^<frozen |[/\\](?:lib|lib64|Lib)[/\\](?:python\d(?:\.\d+)?[/\\])?"
    r"(?:site-packages|dist-packages)[/\\]|[/\\]lib(?:64)?[/\\]python\d(?:\.\d+)?[/\\]"
    r"|[/\\]Lib[/\\]|[/\\]Python\d*[/\\][Ll]ib[/\\]|[/\\]Python\.framework[/\\]"
    r"|[/\\]site-packages[/\\]"
    r"|[/\\]dist-packages[/\\]"
)


def is_library_file(filename: str) -> bool:
    """True for the standard library, installed packages and frozen modules."""
    return bool(_LIBRARY_RE.search(filename))


def short_type(error_type: str) -> str:
    """The class name without its module: "json.decoder.JSONDecodeError" -> "JSONDecodeError"."""
    return error_type.rsplit(".", 1)[-1]


@dataclass(frozen=True, slots=True)
class Frame:
    """One frame (or a SyntaxError's location, whose `function` is "") as printed.

    `source_lines` are the source rows shown under it (several only for 3.13's
    multi-line segments), each without the 4-space display indent; `caret_start` and
    `caret_end` index the first row (0-based, inclusive) where carets were shown, and
    `caret_end_row` is the row the last caret is on.
    """

    filename: str
    line: int
    function: str
    source_lines: tuple[str, ...] = ()
    caret_start: int | None = None
    caret_end: int | None = None
    caret_end_row: int = 0
    caret_end_line: int | None = None  # file line of the last caret row (3.13 segments)
    repeated: int = 0

    @property
    def source_line(self) -> str:
        return self.source_lines[0].strip() if self.source_lines else ""

    @property
    def is_location(self) -> bool:
        """A SyntaxError's `File "...", line N` without a function."""
        return not self.function


@dataclass(frozen=True, slots=True)
class ParsedError:
    """One exception of a traceback, located in the student's code.

    `line`/`column`/`end_line`/`end_column` are None when unknown (column: no carets
    were printed, or they covered the whole line); `function` is "" at module level;
    `notes` hold PEP 678 notes and the "Did you mean" sentence, whose name is also in
    `suggestion` (or `missing_import` for "Did you forget to import 'x'?").
    """

    error_type: str
    message: str
    line: int | None = None
    column: int | None = None
    end_line: int | None = None
    end_column: int | None = None
    source_line: str = ""
    function: str = ""
    notes: tuple[str, ...] = ()
    suggestion: str = ""
    missing_import: str = ""
    filename: str = ""
    frames: tuple[Frame, ...] = ()
    sub_errors: tuple[ParsedError, ...] = ()

    @property
    def short_type(self) -> str:
        return short_type(self.error_type)

    @property
    def is_syntax(self) -> bool:
        """SyntaxError and its subclasses IndentationError and TabError."""
        return self.short_type in _SYNTAX_TYPES

    @property
    def raised_in_library(self) -> bool:
        """True when the innermost frame is library code called from the student's line."""
        return bool(self.frames) and is_library_file(self.frames[-1].filename)


@dataclass(frozen=True, slots=True)
class ParsedTraceback:
    """The final exception (`error`) and the earlier ones of its chain, first first."""

    error: ParsedError
    chain: tuple[ParsedError, ...] = ()
    student_file: str = ""

    @property
    def errors(self) -> tuple[ParsedError, ...]:
        """Every exception in the order printed, the final one last."""
        return (*self.chain, self.error)


# --- reading blocks ---------------------------------------------------------------------


@dataclass(slots=True)
class _Block:
    """One exception's part of the text: its frames and its exception-only lines."""

    frames: list[Frame] = field(default_factory=list)
    tail: list[str] = field(default_factory=list)
    sub_blocks: list[list[str]] = field(default_factory=list)


def _number(digits: str, limit: int) -> int | None:
    """The number a run of digits spells, None above `limit`; never converts thousands
    of digits (int() refuses more than 4,300 of them)."""
    significant = digits.lstrip("0") or "0"
    if len(significant) > len(str(limit)):
        return None
    value = int(significant)
    return value if value <= limit else None


def _line_number(digits: str) -> int:
    """A frame's line number; 0 (unknown) when it cannot be a real one."""
    return _number(digits, MAX_LINE) or 0


def _count(digits: str) -> int:
    found = _number(digits, _MAX_COUNT)
    return _MAX_COUNT if found is None else found


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _looks_like_error_line(line: str) -> bool:
    found = _ERROR_LINE_RE.match(line.strip())
    return bool(found and _EXCEPTION_NAME_RE.search(found["type"]))


def _frame_from(header: re.Match[str], body: list[str], display_indent: int) -> Frame:
    """A frame from its `File` line and the rows under it."""
    sources: list[str] = []
    source_numbers: list[int] = []  # offset of each source row from the frame's line
    carets: list[tuple[int, int, int]] = []  # (source row, start, end) in display columns
    offset = 0
    for row in body:
        elided = _ELIDED_RE.match(row)
        if elided:
            offset = min(offset + _count(elided["count"]), MAX_LINE)
            continue
        if _CARET_RE.match(row) and sources:
            text = row[display_indent:] if not row[:display_indent].strip() else row.lstrip()
            marks = [i for i, ch in enumerate(text) if ch in "~^"]
            carets.append((len(sources) - 1, marks[0], marks[-1]))
            continue
        sources.append(row[display_indent:] if row[:display_indent].strip() == "" else row)
        source_numbers.append(offset)
        offset += 1
    start = end = None
    end_row = 0
    end_line = None
    if carets:
        first_row, start, _ = carets[0]
        end_row, _, end = carets[-1]
        if first_row != 0:
            start = None  # carets that do not begin on the first row: keep only the line
        line = _line_number(header["line"])
        if line and end_row < len(source_numbers):
            end_line = line + source_numbers[end_row]
    func = (header["func"] or "").strip()
    return Frame(
        filename=header["file"],
        line=_line_number(header["line"]),
        function=func,
        source_lines=tuple(sources),
        caret_start=start,
        caret_end=end if start is not None else None,
        caret_end_row=end_row,
        caret_end_line=end_line if start is not None else None,
    )


def _frame_body(lines: list[str], index: int, file_indent: int) -> tuple[list[str], int]:
    """The source and caret rows under a `File` line starting at `index`, and the index
    after them: rows indented deeper than the `File` line (or, in a traceback pasted
    without its indentation, the one row after it and its carets)."""
    body: list[str] = []
    while index < len(lines):
        row = lines[index]
        if not row.strip() or _FILE_RE.match(row) or _REPEATED_RE.match(row):
            break
        deeper = _indent(row) > file_indent
        flush_source = not body and not _looks_like_error_line(row)
        if not (deeper or flush_source or (body and _CARET_RE.match(row))):
            break
        body.append(row)
        index += 1
    return body, index


def _read_block(lines: list[str]) -> _Block:
    """Frames and exception-only lines of one exception's text (no chain messages)."""
    block = _Block()
    index = 0
    count = len(lines)
    while index < count:
        line = lines[index]
        stripped = line.strip()
        if block.tail:
            block.tail.append(line)
            index += 1
            continue
        if not stripped or _HEADER_RE.search(stripped):
            index += 1
            continue
        repeated = _REPEATED_RE.match(line)
        if repeated and block.frames:
            last = block.frames[-1]
            repeats = min(last.repeated + _count(repeated["count"]), _MAX_COUNT)
            block.frames[-1] = replace(last, repeated=repeats)
            index += 1
            continue
        header = _FILE_RE.match(line)
        if header:
            file_indent = len(header["indent"])
            body, index = _frame_body(lines, index + 1, file_indent)
            display = file_indent + 2
            if body and _indent(body[0]) < display:
                display = _indent(body[0])
            block.frames.append(_frame_from(header, body, display))
            continue
        block.tail.append(line)
        index += 1
    while block.tail and not block.tail[-1].strip():
        block.tail.pop()
    return block


def _split_groups(lines: list[str]) -> tuple[list[str], list[list[str]]]:
    """An exception group's own lines (margin removed) and each member's lines."""
    own: list[str] = []
    members: list[list[str]] = []
    current: list[str] | None = None
    for line in lines:
        if _GROUP_SEPARATOR_RE.match(line):
            if re.search(r"-{3,} (?:\d+|\.\.\.) -{3,}", line):
                current = []
                members.append(current)
            else:
                current = None  # the closing rule
            continue
        if current is not None:
            current.append(line[2:])  # one level of margin less
            continue
        found = _GROUP_LINE_RE.match(line)
        if found is None:
            own.append(line)
        elif len(found["indent"]) == 2:
            own.append(found["rest"] or "")
    return own, [_member(member) for member in members]


def _member(lines: list[str]) -> list[str]:
    """A member's lines, one level up: a nested group keeps its margins (it is split in
    turn), a plain exception loses them."""
    if any(_GROUP_SEPARATOR_RE.match(line) for line in lines):
        return lines
    out: list[str] = []
    for line in lines:
        found = _GROUP_LINE_RE.match(line)
        out.append((found["rest"] or "") if found else line)
    return out


# --- locating in the student's file -----------------------------------------------------


def _code_line(code_lines: list[str], line: int | None) -> str:
    if line is None or line < 1 or line > len(code_lines):
        return ""
    return code_lines[line - 1]


def _student_file(frames: list[Frame], code_lines: list[str]) -> str:
    """The student's file among the frames' files (see the module docstring)."""
    candidates: list[str] = []
    for frame in frames:
        if not is_library_file(frame.filename) and frame.filename not in candidates:
            candidates.append(frame.filename)
    if not candidates:
        return ""
    if len(candidates) == 1 or not code_lines:
        return candidates[0]
    best, best_score = candidates[0], 0
    for name in candidates:
        score = 0
        for frame in frames:
            if frame.filename != name or not frame.source_line:
                continue
            own = _code_line(code_lines, frame.line).strip()
            score += 1 if own == frame.source_line else -1
        if score > best_score:
            best, best_score = name, score
    return best


def _columns(frame: Frame, code_lines: list[str]) -> tuple[int | None, int | None, int | None]:
    """(column, end line, end column) of the carets, in the file when the code is known."""
    if frame.caret_start is None or frame.caret_end is None or not frame.source_lines:
        return None, None, None
    shown = frame.source_lines[0]
    original = _code_line(code_lines, frame.line)
    # CPython prints a row dedented by some amount; the original has it back.
    dedent = 0
    if original.strip() and original.strip() == shown.strip():
        dedent = _indent(original) - _indent(shown)
    elif original.rstrip().endswith(shown.strip()) and shown.strip():
        dedent = len(original.rstrip()) - len(shown.rstrip())
    dedent = max(0, dedent)
    column = dedent + frame.caret_start + 1
    end_line = frame.caret_end_line or frame.line
    end_column = dedent + frame.caret_end + 1
    return column, end_line, end_column


def _split_message(error_type: str, message: str) -> tuple[str, str, str, str]:
    """(message, note, suggested name, missing import) from a message with a suggestion."""
    if short_type(error_type) in _SYNTAX_TYPES:
        return message, "", "", ""
    for pattern in _SUGGESTION_RES:
        found = pattern.match(message)
        if found:
            groups = found.groupdict()
            return (
                found["message"],
                found["note"],
                groups.get("name") or "",
                groups.get("module") or "",
            )
    return message, "", "", ""


def _error_from(block: _Block, student_file: str, code_lines: list[str]) -> ParsedError | None:
    tail = block.tail
    # The error line: the first that names an exception, else the first of its shape
    # (a user-defined class may be called anything).
    first = next((i for i, row in enumerate(tail) if _looks_like_error_line(row)), -1)
    if first < 0:
        first = next((i for i, row in enumerate(tail) if _ERROR_LINE_RE.match(row.strip())), -1)
    if first < 0:
        return None
    found = _ERROR_LINE_RE.match(tail[first].strip())
    assert found is not None
    error_type = found["type"]
    message, note, suggestion, missing = _split_message(
        error_type, (found["message"] or "").strip()
    )
    notes = [row.strip() for row in tail[first + 1 :] if row.strip()]
    if note:
        notes.insert(0, note)

    frames = block.frames
    chosen: Frame | None = None
    if short_type(error_type) in _SYNTAX_TYPES and frames and frames[-1].is_location:
        location = frames[-1]
        if not student_file or location.filename == student_file:
            chosen = location
    if chosen is None:
        own = [f for f in frames if f.filename == student_file] if student_file else []
        if own:
            chosen = own[-1]
        elif frames and not student_file:
            chosen = frames[-1]

    line = column = end_line = end_column = None
    source = function = filename = ""
    if chosen is not None:
        line = chosen.line or None  # 0: a line number that cannot be real
        filename = chosen.filename
        function = "" if chosen.function == _MODULE_LEVEL else chosen.function
        source = chosen.source_line or _code_line(code_lines, line).strip()
        if line is not None:
            column, end_line, end_column = _columns(chosen, code_lines)
        if column is not None and end_column is not None:
            single = end_line == line and end_column <= column
            if single:
                end_line = end_column = None
    return ParsedError(
        error_type=error_type,
        message=message,
        line=line,
        column=column,
        end_line=end_line,
        end_column=end_column,
        source_line=source,
        function=function,
        notes=tuple(notes),
        suggestion=suggestion,
        missing_import=missing,
        filename=filename,
        frames=tuple(frames),
    )


# --- entry point ------------------------------------------------------------------------


def _normalise(text: str) -> list[str]:
    text = _ANSI_RE.sub("", text.replace("\r\n", "\n").replace("\r", "\n"))
    return text.split("\n")


def _start(lines: list[str]) -> int | None:
    for index, line in enumerate(lines):
        if _HEADER_RE.search(line) or _FILE_RE.match(line):
            return index
        if _GROUP_LINE_RE.match(line) and "Exception Group Traceback" in line:
            return index
    return None


def _segments(lines: list[str]) -> list[list[str]]:
    segments: list[list[str]] = [[]]
    for line in lines:
        if _CHAIN_RE.match(line):
            segments.append([])
        else:
            segments[-1].append(line)
    return [segment for segment in segments if any(row.strip() for row in segment)]


def _blocks(lines: list[str]) -> list[_Block]:
    blocks: list[_Block] = []
    for segment in _segments(lines):
        if any("Exception Group Traceback" in row for row in segment[:3]) or any(
            _GROUP_SEPARATOR_RE.match(row) for row in segment
        ):
            own, members = _split_groups(segment)
            block = _read_block(own)
            block.sub_blocks = members
        else:
            block = _read_block(segment)
        blocks.append(block)
    return blocks


def _error_only(lines: list[str]) -> ParsedTraceback | None:
    """An error line with no traceback around it ("KeyError: 'x'" pasted alone)."""
    for line in reversed(lines):
        if _looks_like_error_line(line):
            found = _ERROR_LINE_RE.match(line.strip())
            assert found is not None
            message, note, suggestion, missing = _split_message(
                found["type"], (found["message"] or "").strip()
            )
            return ParsedTraceback(
                error=ParsedError(
                    error_type=found["type"],
                    message=message,
                    notes=(note,) if note else (),
                    suggestion=suggestion,
                    missing_import=missing,
                )
            )
    return None


def _parse_lines(lines: list[str], code_lines: list[str]) -> ParsedTraceback | None:
    start = _start(lines)
    if start is None and any(_GROUP_SEPARATOR_RE.match(line) for line in lines):
        start = 0  # a group that was never raised itself: no traceback of its own
    if start is None:
        return _error_only(lines)
    blocks = _blocks(lines[start:])
    all_frames = [frame for block in blocks for frame in block.frames]
    student = _student_file(all_frames, code_lines)
    errors: list[ParsedError] = []
    for block in blocks:
        error = _error_from(block, student, code_lines)
        if error is None:
            continue
        if block.sub_blocks:
            members = []
            for member in block.sub_blocks:
                parsed = _parse_lines(member, code_lines)
                if parsed is not None:
                    members.append(parsed.error)
            error = replace(error, sub_errors=tuple(members))
        errors.append(error)
    if not errors:
        return _error_only(lines)
    return ParsedTraceback(error=errors[-1], chain=tuple(errors[:-1]), student_file=student)


def parse_traceback(text: str, code: str = "") -> ParsedTraceback | None:
    """The exceptions in `text` (a traceback, or stderr that ends with one), located in
    `code` when it is given. None when `text` holds no traceback and no error line."""
    if not text or not text.strip():
        return None
    code_lines = code.replace("\r\n", "\n").split("\n") if code else []
    return _parse_lines(_normalise(text), code_lines)
