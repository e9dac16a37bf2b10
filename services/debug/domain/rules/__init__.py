"""Offline advice per error type: what the three hint levels say, and a checked fix.

Each rule reads the parsed error and the student's program and returns an `Advice`:
`general` names the kind of problem in plain words (never code), `specific` points at
the line, name or value and what is wrong with it, and either `fix` (a mechanical
correction of the whole program) or `words` (how to fix it, with an example) for the
solution level. A fix is only offered when it is well-formed: syntax fixes must compile
past the broken line, every other fix must compile. Nothing is run here.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

from services.debug.domain.edits import Program
from services.debug.domain.rules.attributes import attribute_rule
from services.debug.domain.rules.common import Advice, Ctx
from services.debug.domain.rules.lookups import index_rule, key_rule
from services.debug.domain.rules.names import name_rule, unbound_rule
from services.debug.domain.rules.others import (
    assert_rule,
    file_rule,
    import_rule,
    module_rule,
    raised_rule,
    recursion_rule,
    stop_rule,
    zero_rule,
)
from services.debug.domain.rules.syntax import indentation_rule, syntax_rule, tab_rule
from services.debug.domain.rules.types import type_rule
from services.debug.domain.rules.values import value_rule
from services.debug.domain.traceback import ParsedError

__all__ = ["Advice", "advise"]

_RULES: dict[str, Callable[[Ctx], Advice]] = {
    "SyntaxError": syntax_rule,
    "IndentationError": indentation_rule,
    "TabError": tab_rule,
    "NameError": name_rule,
    "UnboundLocalError": unbound_rule,
    "TypeError": type_rule,
    "ValueError": value_rule,
    "JSONDecodeError": value_rule,
    "IndexError": index_rule,
    "KeyError": key_rule,
    "AttributeError": attribute_rule,
    "ZeroDivisionError": zero_rule,
    "ModuleNotFoundError": module_rule,
    "ImportError": import_rule,
    "RecursionError": recursion_rule,
    "FileNotFoundError": file_rule,
    "StopIteration": stop_rule,
    "AssertionError": assert_rule,
}
_SYNTAX = frozenset({"SyntaxError", "IndentationError", "TabError"})


def advise(error: ParsedError, code: str, *, causes: Sequence[ParsedError] = ()) -> Advice:
    """The advice for one error in `code`; `causes` are the errors raised before it in its
    chain, first first."""
    ctx = Ctx(error=error, program=Program(code), causes=causes)
    kind = error.short_type
    raised = re.match(r"raise\b", ctx.text.strip()) is not None
    rule = _RULES.get(kind)
    if rule is None or (raised and kind not in _SYNTAX):
        # Raised on purpose by the student's own `raise` (or a type with no rule).
        cause = ""
        if causes:
            cause = advise(causes[-1], code, causes=causes[:-1]).specific
        return raised_rule(ctx, cause)
    return rule(ctx)
