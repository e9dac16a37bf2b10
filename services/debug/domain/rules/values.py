"""ValueError (and json's JSONDecodeError): the right type with an unusable value."""

from __future__ import annotations

import ast
import re

from services.debug.domain.edits import source_of, wrap_node
from services.debug.domain.rules.common import (
    Advice,
    Ctx,
    Finding,
    Handler,
    code,
    dispatch,
    example,
)

VALUE_GENERAL = (
    "A function got a value of the right type but with unusable content: for example text "
    "that is not a number given to `int()`, or a different number of values than there "
    "are names to receive them."
)


def _calls_to(ctx: Ctx, name: str) -> list[ast.Call]:
    return [
        node
        for node in ctx.nodes(ast.Call)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id == name
        and len(node.args) == 1
    ]


def _int_literal(ctx: Ctx, found: re.Match[str]) -> Finding:
    value = found.group(1)
    words = example(
        "Check the text before converting it, or catch the error and ask again:",
        'text = input("How many apples? ")\nif text.isdigit():\n    apples = int(text)\n'
        'else:\n    print("Please type a number, like 12")',
    )
    why = f"`int()` can only convert text made of digits, and it got {value}."
    if not re.fullmatch(r"'\s*-?\d+\.\d*\s*'", value):
        return Finding(why, None, words)
    why += " That is a decimal number: `int()` does not accept a decimal point."
    for call in _calls_to(ctx, "int"):
        new = wrap_node(ctx.program, call.args[0], "float(", ")")
        summary = "Convert to a float first, then to a whole number."
        return Finding(why, ctx.replace_line(new, summary), words)
    return Finding(why, None, words)


def _float_literal(ctx: Ctx, found: re.Match[str]) -> Finding:
    value = found.group(1)
    words = example(
        "Make sure the text is a number written with a dot, or catch the error:",
        "try:\n    price = float(text)\nexcept ValueError:\n"
        '    print("Please type a number like 3.50")',
    )
    why = f"`float()` can only convert text that looks like a number, and it got {value}."
    if not re.fullmatch(r"'\s*-?\d+,\d+\s*'", value):
        return Finding(why, None, words)
    why += " It uses a comma as the decimal separator; Python needs a dot."
    for call in _calls_to(ctx, "float"):
        new = wrap_node(ctx.program, call.args[0], "", '.replace(",", ".")')
        summary = "Replace the decimal comma with a dot before converting."
        return Finding(why, ctx.replace_line(new, summary), words)
    return Finding(why, None, words)


def _unpack(ctx: Ctx, found: re.Match[str]) -> Finding:
    much, expected, got = found.groups()
    have = f"{got} values" if got else ("more values" if much == "too many" else "fewer values")
    return Finding(
        f"The line has {expected} name(s) on the left of `=`, but the value on the right holds "
        f"{have}. Unpacking needs exactly one name per value.",
        None,
        example(
            "Use as many names as there are values (or take the values you need by index):",
            "x, y, z = (3, 4, 5)\nx, y = point[0], point[1]",
        ),
    )


def _remove(ctx: Ctx, _: re.Match[str]) -> Finding:
    words = example(
        "Check that the value is in the list before removing it:",
        'if "butter" in shopping:\n    shopping.remove("butter")',
    )
    for node in ctx.nodes(ast.Expr):
        assert isinstance(node, ast.Expr)
        call = node.value
        if not (
            isinstance(call, ast.Call)
            and isinstance(call.func, ast.Attribute)
            and call.func.attr == "remove"
            and len(call.args) == 1
        ):
            continue
        items = source_of(ctx.program, call.func.value)
        value = source_of(ctx.program, call.args[0])
        if items and value:
            summary = "Only remove the value when it is in the list."
            return Finding(
                f"`remove` was asked to remove {code(value)}, which is not in {code(items)}.",
                ctx.guard_statement(f"{value} in {items}", summary),
                words,
            )
    return Finding("`remove` was asked to remove a value that is not in the list.", None, words)


def _index(ctx: Ctx, _: re.Match[str]) -> Finding:
    return Finding(
        "`index()` was asked for a value that is not in the list.",
        None,
        example("Check with `in` first:", "if x in items:\n    position = items.index(x)"),
    )


def _math_domain(ctx: Ctx, _: re.Match[str]) -> Finding:
    return Finding(
        "A `math` function got a value outside the numbers it works for: `sqrt` of a "
        "negative number, or `log` of zero or of a negative number.",
        None,
        example(
            "Check the value first (or fix the calculation that produced it):",
            "value = hypotenuse ** 2 - side ** 2\nif value >= 0:\n    print(math.sqrt(value))",
        ),
    )


def _other(ctx: Ctx) -> Finding:
    return Finding(
        f"Python says *{ctx.error.message}*: the value has the right type, but not a value "
        "this operation accepts.",
        None,
        "Print the value just before this line to see what it really is, then check where "
        "it came from:\n\n```python\nprint(repr(value), type(value))\n```",
    )


_HANDLERS: tuple[tuple[str, Handler], ...] = (
    (r"invalid literal for int\(\) with base \d+: (.+)", _int_literal),
    (r"could not convert string to float: (.+)", _float_literal),
    (r"(too many|not enough) values to unpack \(expected (\d+)(?:, got (\d+))?\)", _unpack),
    (r"list\.remove\(x\): x not in list", _remove),
    (r"is not in list", _index),
    (r"math domain error", _math_domain),
)


def _json(ctx: Ctx) -> Finding:
    why = "The text given to `json.loads` (or the file given to `json.load`) is not valid JSON."
    if "double quotes" in ctx.error.message:
        why += (
            ' JSON requires double quotes `"` around keys and strings; single quotes are '
            "Python's style, not JSON's."
        )
    elif "Expecting value: line 1 column 1" in ctx.error.message:
        why += " It is empty, or does not start like JSON at all."
    return Finding(
        why,
        None,
        example(
            "Give it valid JSON (double quotes, no trailing commas), or build the data as a "
            "Python dict directly:",
            'data = \'{"name": "Ana", "age": 12}\'\nperson = json.loads(data)',
        ),
    )


def value_rule(ctx: Ctx) -> Advice:
    if ctx.error.short_type == "JSONDecodeError":
        finding = _json(ctx)
    else:
        finding = dispatch(ctx, _HANDLERS, _other)
    return Advice(
        general=VALUE_GENERAL,
        specific=ctx.specific(finding.why),
        fix=finding.fix,
        words=finding.words,
    )
