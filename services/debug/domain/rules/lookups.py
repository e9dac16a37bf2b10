"""IndexError and KeyError: a position or a key that is not there.

The subscript the error happened in is the one the 3.11+ carets mark (or the first on
the line); the fixes follow the beginner patterns: a loop that runs one step too far
(`range(len(x) + 1)`, `while i <= len(x)`), `x[len(x)]`, a comprehension over items of
different lengths, popping an empty list; counting with `d[k] += 1`, a key spelt
differently from the stored one, `del` of a missing key, and reads of missing keys.
"""

from __future__ import annotations

import ast
from collections.abc import Callable

from services.debug.domain.edits import (
    Fix,
    enclosing,
    indent_of,
    node_span,
    replace_node,
    source_of,
    statement_at,
    walk,
    wrap_node,
)
from services.debug.domain.rules.common import (
    COMPREHENSIONS,
    Advice,
    Ctx,
    Finding,
    close_name,
    code,
    example,
)

INDEX_GENERAL = (
    "The program asked for a position that does not exist in a list, string or tuple. "
    "Positions start at 0, so the last one is the length minus 1; a loop that goes one "
    "step too far, or an empty list, are the usual causes."
)
KEY_GENERAL = (
    "The program looked up a key in a dictionary that is not there. A dictionary only has "
    "the keys that were put into it, and keys must match exactly, including capital "
    "letters and spaces."
)
SubscriptRule = Callable[[Ctx, ast.Subscript], Finding | None]


def _comprehension_filter(ctx: Ctx, comp: ast.expr, condition: str, summary: str) -> Fix | None:
    """The comprehension (on one line) with `if condition` added at its end."""
    span = node_span(ctx.program, comp)
    if span is None or span[0] != span[2]:
        return None
    text = ctx.program.line(span[0])
    end = span[3] - 1  # before the closing bracket
    return ctx.replace_line(text[:end] + f" if {condition}" + text[end:], summary)


def _single_comprehension(ctx: Ctx) -> list[tuple[ast.expr, str]]:
    """(comprehension, its loop name) for the one-loop comprehensions around the line."""
    if ctx.tree is None or ctx.line is None:
        return []
    found: list[tuple[ast.expr, str]] = []
    for comp in enclosing(ctx.tree, ctx.line, COMPREHENSIONS):
        assert isinstance(comp, COMPREHENSIONS)
        generators = comp.generators
        if len(generators) == 1 and isinstance(generators[0].target, ast.Name):
            found.append((comp, generators[0].target.id))
    return found


# --- IndexError -------------------------------------------------------------------------


def _index_is_length(ctx: Ctx, node: ast.Subscript) -> Finding | None:
    seq, index = source_of(ctx.program, node.value), node.slice
    if not (
        isinstance(index, ast.Call)
        and isinstance(index.func, ast.Name)
        and index.func.id == "len"
        and index.args
        and source_of(ctx.program, index.args[0]) == seq
    ):
        return None
    new = replace_node(ctx.program, index, f"len({seq}) - 1")
    return Finding(
        f"{code(f'{seq}[len({seq})]')} asks for the position just *after* the last item: "
        f"with {code(f'len({seq})')} items, the positions are 0 to {code(f'len({seq}) - 1')}.",
        ctx.replace_line(new, "The last position is the length minus 1."),
    )


def _short_items_in_comprehension(ctx: Ctx, node: ast.Subscript) -> Finding | None:
    index = node.slice
    if not (isinstance(index, ast.Constant) and isinstance(index.value, int) and index.value >= 0):
        return None
    for comp, name in _single_comprehension(ctx):
        if isinstance(node.value, ast.Name) and node.value.id == name:
            k = index.value
            summary = f"Skip the items that have no position {k}."
            return Finding(
                f"Some {code(name)} in the comprehension have fewer than {k + 1} items, so "
                f"{code(f'{name}[{k}]')} does not exist for them.",
                _comprehension_filter(ctx, comp, f"len({name}) > {k}", summary),
            )
    return None


def _range_one_too_far(ctx: Ctx, node: ast.Subscript) -> Finding | None:
    if ctx.tree is None or ctx.line is None or not isinstance(node.slice, ast.Name):
        return None
    variable, seq = node.slice.id, source_of(ctx.program, node.value)
    for loop in enclosing(ctx.tree, ctx.line, (ast.For,)):
        assert isinstance(loop, ast.For)
        call = loop.iter
        if not (
            isinstance(loop.target, ast.Name)
            and loop.target.id == variable
            and isinstance(call, ast.Call)
            and isinstance(call.func, ast.Name)
            and call.func.id == "range"
            and call.args
        ):
            continue
        stop = call.args[-1]
        if (
            isinstance(stop, ast.BinOp)
            and isinstance(stop.op, ast.Add)
            and isinstance(stop.right, ast.Constant)
            and stop.right.value == 1
            and isinstance(stop.left, ast.Call)
            and isinstance(stop.left.func, ast.Name)
            and stop.left.func.id == "len"
        ):
            length = source_of(ctx.program, stop.left)
            new = replace_node(ctx.program, stop, length)
            summary = f"Stop the loop at {code(length)}: `range` already stops one before it."
            return Finding(
                f"The loop on line {loop.lineno} makes {code(variable)} go up to {code(length)} "
                f"(because of the `+ 1`), but the last position of {code(seq)} is "
                f"{code(length + ' - 1')}.",
                ctx.replace_line(new, summary, loop.lineno),
            )
    return None


def _while_one_too_far(ctx: Ctx, node: ast.Subscript) -> Finding | None:
    if ctx.tree is None or ctx.line is None or not isinstance(node.slice, ast.Name):
        return None
    variable = node.slice.id
    for loop in enclosing(ctx.tree, ctx.line, (ast.While,)):
        assert isinstance(loop, ast.While)
        test = loop.test
        if (
            isinstance(test, ast.Compare)
            and len(test.ops) == 1
            and isinstance(test.ops[0], ast.LtE)
            and isinstance(test.left, ast.Name)
            and test.left.id == variable
        ):
            right = source_of(ctx.program, test.comparators[0])
            new = replace_node(ctx.program, test, f"{variable} < {right}")
            summary = "Use `<`: the last position is one less than the length."
            return Finding(
                f"The loop on line {loop.lineno} goes on while {code(variable)} `<=` "
                f"{code(right)}, so its last round uses position {code(right)}, one past the end.",
                ctx.replace_line(new, summary, loop.lineno),
            )
    return None


_INDEX_RULES: tuple[SubscriptRule, ...] = (
    _index_is_length,
    _short_items_in_comprehension,
    _range_one_too_far,
    _while_one_too_far,
)


def _pop_empty(ctx: Ctx) -> Finding:
    why = "`pop()` was called on a list that is already empty."
    summary = "Only pop when the list is not empty."
    for node in ctx.nodes((ast.Assign, ast.Expr)):
        value = getattr(node, "value", None)
        if not (
            isinstance(value, ast.Call)
            and isinstance(value.func, ast.Attribute)
            and value.func.attr == "pop"
        ):
            continue
        items = source_of(ctx.program, value.func.value)
        if not items:
            continue
        if isinstance(node, ast.Assign):
            new = wrap_node(ctx.program, value, "", f" if {items} else None")
            return Finding(why, ctx.replace_line(new, summary))
        return Finding(why, ctx.guard_statement(items, summary))
    return Finding(why)


def index_rule(ctx: Ctx) -> Advice:
    message = ctx.error.message
    what = "string" if "string" in message else "tuple" if "tuple" in message else "list"
    words = example(
        "Only use positions from 0 to `len(x) - 1`; loop over the items themselves, or over "
        "`range(len(x))`:",
        "for i in range(len(items)):\n    print(i, items[i])\nlast = items[-1]",
    )
    finding: Finding | None = None
    if message.startswith("pop from empty"):
        finding = _pop_empty(ctx)
        words = example(
            "Check that the list is not empty first:", "if stack:\n    top = stack.pop()"
        )
    else:
        finding = _first_subscript_finding(ctx, _INDEX_RULES)
    if finding is None:
        finding = Finding(
            f"The position used is not one of the {what}'s positions (0 to its length minus 1)."
        )
    return Advice(
        general=INDEX_GENERAL,
        specific=ctx.specific(f"Python says *{message}*. {finding.why}"),
        fix=finding.fix,
        words=words,
    )


def _first_subscript_finding(ctx: Ctx, rules: tuple[SubscriptRule, ...]) -> Finding | None:
    for node in ctx.nodes(ast.Subscript):
        assert isinstance(node, ast.Subscript)
        for rule in rules:
            finding = rule(ctx, node)
            if finding is not None:
                return finding
    return None


# --- KeyError ---------------------------------------------------------------------------


def _dict_keys(tree: ast.AST) -> list[str]:
    return [
        key.value
        for node in walk(tree)
        if isinstance(node, ast.Dict)
        for key in node.keys
        if isinstance(key, ast.Constant) and isinstance(key.value, str)
    ]


def _missing(ctx: Ctx, node: ast.Subscript) -> str:
    mapping = source_of(ctx.program, node.value)
    return f"The dictionary {code(mapping)} has no key {code(ctx.error.message)}"


def _similar_key(ctx: Ctx, node: ast.Subscript) -> Finding | None:
    key = node.slice
    if ctx.tree is None or not (
        isinstance(key, ast.Constant)
        and isinstance(key.value, str)
        and repr(key.value) == ctx.error.message
    ):
        return None
    close = close_name(key.value, _dict_keys(ctx.tree), cutoff=0.8)
    if not close:
        return None
    literal = source_of(ctx.program, key)
    quote = literal[0] if literal[:1] in ("'", '"') else "'"
    new = replace_node(ctx.program, key, f"{quote}{close}{quote}")
    summary = f"Use the key exactly as it was stored: {code(repr(close))}."
    return Finding(
        f"{_missing(ctx, node)}, but it has {code(repr(close))}: keys must match exactly, "
        "including capital letters.",
        ctx.replace_line(new, summary),
    )


def _count_up(ctx: Ctx, node: ast.Subscript) -> Finding | None:
    statement = statement_at(ctx.tree, ctx.line) if ctx.tree and ctx.line else None
    if not (
        isinstance(statement, ast.AugAssign)
        and statement.target is node
        and isinstance(statement.op, ast.Add | ast.Sub)
    ):
        return None
    mapping, index = source_of(ctx.program, node.value), source_of(ctx.program, node.slice)
    op = "+" if isinstance(statement.op, ast.Add) else "-"
    value = source_of(ctx.program, statement.value)
    new = indent_of(ctx.text) + f"{mapping}[{index}] = {mapping}.get({index}, 0) {op} {value}"
    return Finding(
        f"{_missing(ctx, node)} yet. `{mapping}[{index}] {op}= {value}` first *reads* the "
        "current value, and the first time a key is seen there is nothing to read.",
        ctx.replace_line(new, "Start from 0 when the key is not there yet, with `.get(key, 0)`."),
    )


def _delete(ctx: Ctx, node: ast.Subscript) -> Finding | None:
    statement = statement_at(ctx.tree, ctx.line) if ctx.tree and ctx.line else None
    if not (isinstance(statement, ast.Delete) and any(t is node for t in statement.targets)):
        return None
    mapping, index = source_of(ctx.program, node.value), source_of(ctx.program, node.slice)
    new = indent_of(ctx.text) + f"{mapping}.pop({index}, None)"
    return Finding(
        f"{_missing(ctx, node)}, so there is nothing to delete.",
        ctx.replace_line(new, "Remove the key only if it is there, with `.pop(key, None)`."),
    )


def _missing_in_comprehension(ctx: Ctx, node: ast.Subscript) -> Finding | None:
    for comp, name in _single_comprehension(ctx):
        if isinstance(node.slice, ast.Name) and node.slice.id == name:
            mapping = source_of(ctx.program, node.value)
            summary = f"Skip the keys that {code(mapping)} does not have."
            return Finding(
                f"{_missing(ctx, node)}: the comprehension looks up every {code(name)}, "
                f"including ones that are not keys of {code(mapping)}.",
                _comprehension_filter(ctx, comp, f"{name} in {mapping}", summary),
            )
    return None


def _read(ctx: Ctx, node: ast.Subscript) -> Finding | None:
    if not isinstance(node.ctx, ast.Load):
        return None
    mapping, index = source_of(ctx.program, node.value), source_of(ctx.program, node.slice)
    statement = statement_at(ctx.tree, ctx.line) if ctx.tree and ctx.line else None
    in_arithmetic = statement is not None and any(
        isinstance(parent, ast.BinOp) and node in (parent.left, parent.right)
        for parent in ast.walk(statement)
    )
    default, gives = (", 0", "0") if in_arithmetic else ("", "`None`")
    new = replace_node(ctx.program, node, f"{mapping}.get({index}{default})")
    summary = (
        f"Read the key with `.get()`, which gives {gives} instead of an error when it is missing."
    )
    return Finding(
        f"{_missing(ctx, node)}. Square brackets only read keys that exist.",
        ctx.replace_line(new, summary),
    )


_KEY_RULES: tuple[SubscriptRule, ...] = (
    _similar_key,
    _count_up,
    _delete,
    _missing_in_comprehension,
    _read,
)


def key_rule(ctx: Ctx) -> Advice:
    finding = _first_subscript_finding(ctx, _KEY_RULES) or Finding(
        f"The dictionary has no key {code(ctx.error.message)}."
    )
    return Advice(
        general=KEY_GENERAL,
        specific=ctx.specific(finding.why),
        fix=finding.fix,
        words=example(
            "Check with `in` before looking the key up, or use `.get()` with a default value:",
            "if name in ages:\n    print(ages[name])\ncounts[word] = counts.get(word, 0) + 1",
        ),
    )
