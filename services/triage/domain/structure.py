"""Splits a request into prose, code and traceback, wherever the student put them.

Students paste tracebacks into the question box, code into the question with or
without ``` fences, and tracebacks into the code box. The classifier wants them apart:
a traceback is near-certain evidence of a debugging request, code changes what the
words around it mean, and the prose is what the keyword cues read.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# Exception class names as Python prints them (builtins and user-defined alike).
EXCEPTION_NAME = (
    r"(?:[A-Z]\w*(?:Error|Exception|Warning)|StopIteration|StopAsyncIteration"
    r"|KeyboardInterrupt|SystemExit|GeneratorExit|ExceptionGroup|BaseExceptionGroup)"
)
_EXCEPTION_RE = re.compile(rf"\b{EXCEPTION_NAME}\b")

# Lines that only a traceback has.
_HEADER_RE = re.compile(r"Traceback \(most recent call last\)")
_FILE_RE = re.compile(r'^\s*File "[^"\n]+", line \d+')
_JUPYTER_RE = re.compile(r"^(?:Cell In\s*\[\d+\], line \d+|-{2,}>\s*\d+ )")
# pytest: "test_x.py:5: AssertionError", "E   assert 6 == 5", the ">" line under test,
# the short summary "FAILED test_x.py::test_y - ..." and its "=== 1 failed ===" rule.
_PYTEST_RE = re.compile(
    rf"^\S+\.py:\d+: {EXCEPTION_NAME}\s*$|^E {{3,}}\S|^> {{3,}}\S|^FAILED \S+::\S+"
    r"|^={3,} .*\b(failed|error|errors)\b.* ={3,}$"
)
# Jupyter's "---->" and pytest's ">" point at the failing line; carets underline it.
_ARROW_RE = re.compile(r"^(?:-{2,}>|>)\s*(?:\d+\s)?")
_CARET_RE = re.compile(r"\s*[~^]+\s*")
# Chained exceptions continue one traceback.
_CHAIN_RE = re.compile(
    r"^\s*(During handling of the above exception|The above exception was the direct cause)"
)
# The final line: "KeyError: 'bob'", "StopIteration", "  | ValueError: x" (groups).
_ERROR_LINE_RE = re.compile(
    rf"^[\s|+]*(?:[\w.]+\.)?(?P<type>{EXCEPTION_NAME})(?::\s*(?P<message>.*))?\s*$"
)
_CONTINUATION_RE = re.compile(
    r"^(?:\s+\S|\s*[~^]+\s*$|\s*\[Previous line repeated"
    r"|\s*-{10,}\s*$)"
)
# "IndexError: list index out of range" quoted inside a sentence.
_QUOTED_ERROR_RE = re.compile(rf"\b(?P<type>{EXCEPTION_NAME})\s*:\s*(?P<message>[^\n]*\S)")
_FENCE_RE = re.compile(r"```[^\n`]*\n(?P<body>.*?)(?:```|\Z)", re.DOTALL)
# A line that reads as Python rather than English (at line start, as pasted).
_CODE_LINE_RE = re.compile(
    r"^\s*(?:def \w+\s*\(|class \w+\s*[(:]|for .+ in .+:\s*$|while .+:\s*$|if .+:\s*$"
    r"|elif .+:\s*$|else\s*:\s*$|try\s*:\s*$|except\b.*:\s*$|finally\s*:\s*$|return\b"
    r"|import [\w.]+\s*$|from [\w.]+ import |print\(|with .+:\s*$|yield\b|@\w+"
    r"|[A-Za-z_][\w.\[\]'\"]*\s*(?:[-+*/]?=)\s*\S)"
)


@dataclass(frozen=True)
class Structure:
    """A request taken apart.

    `prose` is the student's words in lower case; `code` all code found (the code box
    and code pasted in the question); `traceback` all traceback text found, with
    `traceback_source` saying where it came from ("attached", "pasted in the question",
    "pasted with the code"). `error_type`/`error_message` come from the traceback, or
    failing that from an error line quoted in the prose (`quoted_error`).
    `failing_line` is the source line the traceback points at, when it shows one.
    """

    prose: str
    code: str
    traceback: str
    traceback_source: str
    error_type: str
    error_message: str
    quoted_error: bool
    failing_line: str

    @property
    def has_traceback(self) -> bool:
        return bool(self.traceback)

    @property
    def has_code(self) -> bool:
        return bool(self.code.strip())


def _looks_like_traceback(text: str) -> bool:
    return any(
        _HEADER_RE.search(line)
        or _FILE_RE.match(line)
        or _JUPYTER_RE.match(line)
        or _PYTEST_RE.match(line)
        for line in text.splitlines()
    )


def _split_lines(text: str) -> tuple[list[str], list[str]]:
    """Separates traceback lines from the rest, in order.

    A traceback starts at a header or a `File "...", line N` line (or a Jupyter or
    pytest marker) and runs through indented source and caret lines to its error line.
    """
    rest: list[str] = []
    traceback: list[str] = []
    inside = False
    for line in text.splitlines():
        starts = bool(
            _HEADER_RE.search(line)
            or _FILE_RE.match(line)
            or _JUPYTER_RE.match(line)
            or _PYTEST_RE.match(line)
        )
        if starts:
            # Jupyter rules a line of dashes above its header; pytest shows the test's
            # source, indented, above its ">" line.
            if not inside and rest and re.fullmatch(r"\s*-{10,}\s*", rest[-1]):
                traceback.append(rest.pop())
            if not inside and line.startswith(">"):
                above: list[str] = []
                while rest and rest[-1].startswith(("    ", "\t")):
                    above.insert(0, rest.pop())
                traceback.extend(above)
            inside = True
            traceback.append(line)
        elif traceback and _CHAIN_RE.match(line):
            inside = True
            traceback.append(line)
        elif inside and _ERROR_LINE_RE.match(line):
            traceback.append(line)
            inside = False
        elif inside and (not line.strip() or _CONTINUATION_RE.match(line)):
            traceback.append(line)
        else:
            inside = False
            rest.append(line)
    return rest, traceback


def _split_code(lines: list[str]) -> tuple[list[str], list[str]]:
    """Separates unfenced code from prose: runs of code-like lines (with the indented
    lines under them) count as code when there are at least two lines of it."""
    prose: list[str] = []
    code: list[str] = []
    block: list[str] = []

    def flush() -> None:
        if len([ln for ln in block if ln.strip()]) >= 2:
            code.extend(block)
        else:
            prose.extend(block)
        block.clear()

    for line in lines:
        indented = line.startswith(("    ", "\t")) and bool(line.strip())
        if _CODE_LINE_RE.match(line) or (block and indented):
            block.append(line)
        else:
            flush()
            prose.append(line)
    flush()
    return prose, code


def _error_details(traceback: str) -> tuple[str, str, str]:
    """(error type, message, failing source line) of a traceback's last exception.

    Read from the end: the last exception and the innermost frame are what broke.
    """
    lines = traceback.splitlines()
    error_type = message = ""
    for line in reversed(lines):
        found = _ERROR_LINE_RE.match(line)
        if found:
            error_type, message = found["type"], (found["message"] or "").strip()
            break
    if not error_type:
        # pytest's "test_x.py:5: AssertionError", or a name mentioned anywhere.
        names = _EXCEPTION_RE.findall(traceback)
        error_type = names[-1] if names else ""
    failing = ""
    for index in range(len(lines) - 1, -1, -1):
        line = lines[index]
        if _FILE_RE.match(line):
            below = lines[index + 1] if index + 1 < len(lines) else ""
            if below.strip() and not _FILE_RE.match(below) and not _CARET_RE.fullmatch(below):
                failing = below.strip()
                break
        elif _ARROW_RE.match(line):
            failing = _ARROW_RE.sub("", line).strip()
            break
    if _ERROR_LINE_RE.match(failing):
        failing = ""
    return error_type, message, failing


def parse(question: str, code: str = "", traceback: str = "") -> Structure:
    """Takes a request apart (see `Structure`)."""
    question = question.replace("\r\n", "\n").replace("\u2019", "'")
    code_parts: list[str] = []
    tb_parts: list[str] = []
    sources: list[str] = []

    if traceback.strip():
        tb_parts.append(traceback)
        sources.append("attached")

    # Code and tracebacks fenced in the question.
    for fenced in _FENCE_RE.finditer(question):
        body = fenced["body"]
        if _looks_like_traceback(body):
            tb_parts.append(body)
            sources.append("pasted in the question")
        else:
            code_parts.append(body)
    unfenced = _FENCE_RE.sub("\n", question)

    rest, pasted = _split_lines(unfenced)
    if pasted:
        tb_parts.append("\n".join(pasted))
        sources.append("pasted in the question")
    prose_lines, code_lines = _split_code(rest)
    if code_lines:
        code_parts.append("\n".join(code_lines))

    if code.strip():
        code_rest, in_code = _split_lines(code)
        if in_code:
            tb_parts.append("\n".join(in_code))
            sources.append("pasted with the code")
            code = "\n".join(code_rest)
        code_parts.insert(0, code)

    prose = " ".join(" ".join(prose_lines).split())
    all_tb = "\n".join(tb_parts)
    error_type, message, failing = _error_details(all_tb) if all_tb else ("", "", "")
    quoted = False
    if not error_type:
        found = _QUOTED_ERROR_RE.search(prose)
        if found:
            error_type, message, quoted = found["type"], found["message"], True
    return Structure(
        prose=prose.lower(),
        code="\n".join(part for part in code_parts if part.strip()),
        traceback=all_tb,
        traceback_source=sources[0] if sources else "",
        error_type=error_type,
        error_message=message,
        quoted_error=quoted,
        failing_line=failing,
    )
