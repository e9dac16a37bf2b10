"""Which curriculum topic an error belongs to.

The topic is what the student has to understand to fix the error, decided from the
error type, its message and the construct on the offending line: an IndexError on a
list is about collections but on a string about strings, and any error that happens
inside a comprehension is about comprehensions; a SyntaxError is about the construct
it is in (a loop header: control flow; a `def`: functions; an unclosed string: strings).
An error raised while handling another (a chain), or one the student raised on purpose,
is about exceptions.
"""

from __future__ import annotations

import ast
import re
import sys
from collections.abc import Callable

from services.debug.domain.edits import Program, bound_names, enclosing, node_span, walk
from services.debug.domain.traceback import ParsedError, ParsedTraceback
from services.kit.topics import ERROR_TOPICS
from services.kit.topics import Topic as Topic  # noqa: PLC0414 - re-exported on purpose

__all__ = ["Topic", "topic_for"]


T = Topic

_COMPREHENSION_FRAMES = frozenset({"<listcomp>", "<dictcomp>", "<setcomp>", "<genexpr>"})
_COMPREHENSIONS = (ast.ListComp, ast.DictComp, ast.SetComp, ast.GeneratorExp)
_STDLIB_MODULES = frozenset(
    name for name in getattr(sys, "stdlib_module_names", ()) if not name.startswith("_")
)


# TypeError and ValueError messages, first match wins.
_BY_MESSAGE: tuple[tuple[str, Topic], ...] = (
    (
        r"missing \d+ required|takes \d+ positional|unexpected keyword argument"
        r"|got multiple values for argument|positional arguments? but",
        T.FUNCTIONS,
    ),
    (r"object is not callable", T.FUNCTIONS),
    (r"'NoneType' object is not subscriptable|'NoneType' object is not iterable", T.FUNCTIONS),
    (r"object is not iterable", T.CONTROL_FLOW),
    (
        r"'str' object does not support item assignment|sequence item \d+: expected str"
        r"|string indices must be|unsupported format|not all arguments"
        r" converted during string formatting|substring not found",
        T.STRINGS,
    ),
    (
        r"to unpack|list\.remove|is not in list|unhashable type|object is not subscriptable"
        r"|indices must be integers|does not support item assignment|empty (list|set|dict)"
        r"|dictionary changed size",
        T.COLLECTIONS,
    ),
    (r"generator already executing|generator raised StopIteration", T.ITERATORS_AND_GENERATORS),
)

_HEADER_TOPICS: tuple[tuple[str, Topic], ...] = (
    (r"(if|elif|else|for|while|break|continue)\b", T.CONTROL_FLOW),
    (r"(def|return|lambda|global|nonlocal)\b", T.FUNCTIONS),
    (r"(class)\b(?!\s*=)", T.CLASSES_AND_OBJECTS),
    (r"(try|except|finally|raise)\b", T.ERRORS_AND_EXCEPTIONS),
    (r"(import|from)\b", T.MODULES),
    (r"with\b", T.FILES),
    (r"yield\b", T.ITERATORS_AND_GENERATORS),
    (r"assert\b", T.TESTING),
)


def _in_comprehension(error: ParsedError, program: Program) -> bool:
    if error.function in _COMPREHENSION_FRAMES:
        return True
    tree = program.tree
    if tree is None or error.line is None or error.column is None:
        return False
    for node in enclosing(tree, error.line, _COMPREHENSIONS):
        span = node_span(program, node)
        if span and span[0] == span[2] == error.line and span[1] + 1 < error.column <= span[3]:
            return True
    return False


def _block_header(program: Program, line: int) -> str:
    """The line opening the block `line` is in: the nearest line above that ends with a
    colon, looking no further up than the first unindented line ("" when none)."""
    for number in range(line - 1, 0, -1):
        row = program.line(number)
        above = row.strip()
        if not above or above.startswith("#"):
            continue
        if above.endswith(":"):
            return above
        if not row[:1].isspace():
            break
    return ""


def _syntax_topic(error: ParsedError, program: Program) -> Topic:
    message = error.message
    if re.search(r"string literal|EOL while scanning|f-string|unterminated triple", message):
        return T.STRINGS
    line = error.line or 0
    text = program.line(line).strip() or error.source_line
    if error.short_type in ("IndentationError", "TabError"):
        after = re.search(r"after '(\w+)' statement|after (function|class) definition", message)
        if after:
            word = after.group(1) or after.group(2)
            text = {"function": "def", "class": "class"}.get(word, word)
        elif not any(re.match(pattern, text) for pattern, _ in _HEADER_TOPICS):
            text = _block_header(program, line) or text
    if re.search(r"\bfor\b.*\bin\b.*\bfor\b|\[.+ for .+ in .+\]|\{.+ for .+ in .+\}", text):
        return T.COMPREHENSIONS
    for pattern, topic in _HEADER_TOPICS:
        if re.match(pattern, text):
            return topic
    return T.FUNCTIONS if re.search(r"\bprint\b", message) else T.VARIABLES_AND_TYPES


# The topic of an AttributeError by the type that lacks the attribute.
_OWNER_TOPICS: dict[str, Topic] = {
    "str": T.STRINGS,
    **dict.fromkeys(("list", "dict", "tuple", "set", "frozenset"), T.COLLECTIONS),
    **dict.fromkeys(("int", "float", "bool", "complex"), T.VARIABLES_AND_TYPES),
    "NoneType": T.FUNCTIONS,
    **dict.fromkeys(("_io.TextIOWrapper", "TextIOWrapper"), T.FILES),
}


def _attribute_topic(error: ParsedError, program: Program) -> Topic:
    if error.message.startswith(("module ", "partially initialized module")):
        return T.MODULES
    found = re.match(r"'([\w.]+)' object has no attribute", error.message)
    topic = (
        _OWNER_TOPICS.get(found.group(1), T.CLASSES_AND_OBJECTS) if found else T.CLASSES_AND_OBJECTS
    )
    if topic is T.FUNCTIONS and _none_from_mutator(program):
        return T.COLLECTIONS
    return topic


def _none_from_mutator(program: Program) -> bool:
    """`x = x.append(...)` and the like: a list method's None kept by mistake."""
    return bool(
        re.search(
            r"^\s*(\w+)\s*=\s*\1\.(append|extend|insert|sort|reverse|remove|clear|update|add)\(",
            program.code,
            re.MULTILINE,
        )
    )


def _name_topic(error: ParsedError, program: Program) -> Topic:
    """A name that is a module: modules; a function, or a function's local: functions."""
    if error.suggestion.startswith("self."):
        return T.CLASSES_AND_OBJECTS
    if "free variable" in error.message:
        return T.FUNCTIONS
    found = re.search(r"name '(\w+)'", error.message)
    name = found.group(1) if found else ""
    if error.missing_import or (
        name in _STDLIB_MODULES and re.search(rf"\b{re.escape(name)}\s*\.", error.source_line)
    ):
        return T.MODULES
    tree = program.tree
    if tree is not None and name:
        if any(isinstance(n, ast.FunctionDef) and n.name == name for n in walk(tree)):
            return T.FUNCTIONS
        top_level = bound_names(
            ast.Module(
                body=[n for n in tree.body if not isinstance(n, ast.FunctionDef)], type_ignores=[]
            )
        )
        if name not in top_level and name in bound_names(tree):
            return T.FUNCTIONS  # only a function's local variable
    return T.VARIABLES_AND_TYPES


def _raised_on_purpose(error: ParsedError) -> bool:
    return bool(re.match(r"raise\b", error.source_line))


def _message_topic(error: ParsedError, program: Program) -> Topic | None:
    """TypeError and ValueError by their message."""
    for pattern, topic in _BY_MESSAGE:
        if re.search(pattern, error.message):
            if topic is T.FUNCTIONS and re.match(r"\w+\.\w+\(\)", error.message):
                return T.CLASSES_AND_OBJECTS  # a method's arguments: `self`
            return topic
    return None


_BY_KIND: dict[str, Callable[[ParsedError, Program], Topic | None]] = {
    "IndexError": lambda e, _: T.STRINGS if "string index" in e.message else T.COLLECTIONS,
    "AttributeError": _attribute_topic,
    "TypeError": _message_topic,
    "ValueError": _message_topic,
    "NameError": _name_topic,
}


def topic_for_error(error: ParsedError, code: str = "", *, chained: bool = False) -> Topic:
    """The topic of one error (see the module docstring)."""
    program = Program(code)
    if error.is_syntax:
        return _syntax_topic(error, program)
    if _in_comprehension(error, program):
        return T.COMPREHENSIONS
    if chained or _raised_on_purpose(error):
        return T.ERRORS_AND_EXCEPTIONS
    by_kind = _BY_KIND.get(error.short_type)
    topic = by_kind(error, program) if by_kind else None
    return topic or ERROR_TOPICS.get(error.short_type, T.ERRORS_AND_EXCEPTIONS)


def topic_for(parsed: ParsedTraceback, code: str = "") -> Topic:
    """The topic of a traceback's final error (a chain is about exception handling)."""
    return topic_for_error(parsed.error, code, chained=bool(parsed.chain))
