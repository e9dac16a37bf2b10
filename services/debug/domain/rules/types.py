"""TypeError: a value of the wrong type, or the wrong number of arguments.

One handler per message. Where 3.11+ carets mark the failing expression, the rules act
on exactly that node (`Ctx.nodes` puts it first); without carets, on the first node of
the right kind on the line.
"""

from __future__ import annotations

import ast
import re
import tokenize

from services.debug.domain.edits import (
    assigned_from_input,
    bound_names,
    indent_of,
    replace_node,
    source_of,
    tokens,
    walk,
    wrap_node,
)
from services.debug.domain.rules.common import (
    BUILTIN_NAMES,
    Advice,
    Ctx,
    Finding,
    Handler,
    a,
    checked,
    code,
    dispatch,
    example,
)

TYPE_GENERAL = (
    "An operation was given a value of the wrong type: for example text where a number "
    "is needed, a number where a list is needed, or the wrong number of arguments for a "
    "function. Python does not convert between types on its own."
)
_OPS: dict[str, type[ast.operator]] = {
    "+": ast.Add,
    "-": ast.Sub,
    "*": ast.Mult,
    "/": ast.Div,
    "//": ast.FloorDiv,
    "%": ast.Mod,
    "**": ast.Pow,
}
# A built-in's name taken by a variable gets this name instead.
_SHADOW_RENAMES = {
    "sum": "total",
    "list": "items",
    "str": "text",
    "max": "largest",
    "min": "smallest",
    "input": "answer",
    "len": "length",
    "dict": "mapping",
    "type": "kind",
    "print": "output",
    "id": "ident",
    "int": "number",
    "float": "value",
    "range": "span",
    "round": "rounded",
    "abs": "magnitude",
    "set": "group",
    "tuple": "pair",
    "next": "following",
}


def _is_text(node: ast.expr, tree: ast.AST | None) -> bool:
    """A value that is certainly a string: a literal, an f-string, str(), input()."""
    if isinstance(node, ast.Constant):
        return isinstance(node.value, str)
    if isinstance(node, ast.JoinedStr):
        return True
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
        return node.func.id in ("str", "input")
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        return _is_text(node.left, tree) or _is_text(node.right, tree)
    return isinstance(node, ast.Name) and tree is not None and assigned_from_input(tree, node.id)


def _from_input(ctx: Ctx, node: ast.AST) -> bool:
    return (
        isinstance(node, ast.Name)
        and ctx.tree is not None
        and assigned_from_input(ctx.tree, node.id)
    )


def _binops(ctx: Ctx, op: type[ast.operator]) -> list[ast.BinOp]:
    return [n for n in ctx.nodes(ast.BinOp) if isinstance(n, ast.BinOp) and isinstance(n.op, op)]


def _concatenate(ctx: Ctx, found: re.Match[str]) -> Finding:
    kind = found.group(1)
    words = example(
        "Convert the number with `str()`, or put it in an f-string:",
        'print("You are " + str(age) + " years old")\nprint(f"You are {age} years old")',
    )
    for node in _binops(ctx, ast.Add):
        if _is_text(node.left, ctx.tree) and not _is_text(node.right, ctx.tree):
            text = source_of(ctx.program, node.right)
            return Finding(
                f"`+` joins text only to text, but {code(text) if text else 'its right side'} "
                f"is {a(kind)} (a number), not text.",
                ctx.convert(node.right, "str", f"Turn {code(text)} into text with `str()`."),
                words,
            )
    return Finding(f"`+` is joining text and {a(kind)}; it joins only text to text.", None, words)


def _operands(ctx: Ctx, found: re.Match[str]) -> Finding:
    symbol, left, right = found.group(1).strip(), found.group(2), found.group(3)
    why = f"`{symbol}` cannot combine {a(left)} (left) with {a(right)} (right)."
    words = example(
        "Convert the values so both sides have the same type, e.g.:",
        'age = int(input("Age: "))\nprint(age + 1)',
    )
    op = _OPS.get(symbol)
    nodes = _binops(ctx, op) if op else []
    if "NoneType" in (left, right):
        why += " One side is `None`: usually the result of a function that does not `return`."
        return Finding(why, None, words)
    if not nodes or "str" not in (left, right) or not {left, right} <= {"str", "int", "float"}:
        return Finding(why, None, words)
    node = nodes[0]
    text_side, number_side = (node.left, node.right) if left == "str" else (node.right, node.left)
    number = "float" if "float" in (left, right) else "int"
    text = source_of(ctx.program, text_side)
    if _from_input(ctx, text_side):
        why += (
            f" {code(text)} holds what `input()` returned, and `input()` always returns text, "
            "even when the user types digits."
        )
        summary = f"Convert {code(text)} to a number with `{number}()`."
        return Finding(why, ctx.convert(text_side, number, summary), words)
    if symbol == "+":
        other = source_of(ctx.program, number_side)
        summary = f"Turn {code(other)} into text with `str()`."
        why += " To join them as text, both must be text."
        return Finding(why, ctx.convert(number_side, "str", summary), words)
    return Finding(why + f" {code(text)} is text; arithmetic needs numbers.", None, words)


def _compare(ctx: Ctx, found: re.Match[str]) -> Finding:
    symbol, left, right = found.groups()
    why = f"`{symbol}` cannot compare {a(left)} with {a(right)}."
    words = example(
        "Compare values of the same type; convert what `input()` returns first:",
        'age = int(input("Age: "))\nif age >= 18:\n    print("adult")',
    )
    if "str" in (left, right):
        number = "float" if "float" in (left, right) else "int"
        for node in ctx.nodes(ast.Compare):
            assert isinstance(node, ast.Compare)
            for operand in [node.left, *node.comparators]:
                if isinstance(operand, ast.Name) and _from_input(ctx, operand):
                    why += f" {code(operand.id)} holds what `input()` returned: always text."
                    summary = f"Convert {code(operand.id)} to a number before comparing."
                    return Finding(why, ctx.convert(operand, number, summary), words)
    return Finding(why, None, words)


def _takes(ctx: Ctx, found: re.Match[str]) -> Finding:
    qualified, takes, given = found.group(1), int(found.group(2)), int(found.group(3))
    name = qualified.rsplit(".", 1)[-1]
    words = example(
        "Call the function with as many values as it has parameters:",
        "def greet(name):\n    print('Hello', name)\n\ngreet('Ada')",
    )
    why = f"{code(qualified + '()')} takes {takes} value(s), but {given} were passed to it."
    for cls in walk(ctx.tree) if ctx.tree is not None else ():
        if not isinstance(cls, ast.ClassDef):
            continue
        for method in cls.body:
            if not (isinstance(method, ast.FunctionDef) and method.name == name):
                continue
            static = any(
                isinstance(d, ast.Name) and d.id == "staticmethod" for d in method.decorator_list
            )
            first = method.args.args[0].arg if method.args.args else ""
            if static or first in ("self", "cls") or given != takes + 1:
                continue
            text = ctx.program.line(method.lineno)
            new = re.sub(
                rf"(def\s+{re.escape(name)}\s*\()\s*(\)?)",
                lambda m: m.group(1) + ("self)" if m.group(2) else "self, "),
                text,
                count=1,
            )
            summary = f"Add `self` as the first parameter of {code(name)}."
            return Finding(
                f"{code(name)} is a method of the class {code(cls.name)}. When you call it on "
                "an object, Python passes the object itself as the first value, so the "
                "method needs a first parameter for it, called `self` by convention. The "
                f"`def` on line {method.lineno} has none.",
                ctx.replace_line(new, summary, method.lineno),
                words,
            )
    return Finding(why, None, words)


def _missing_argument(ctx: Ctx, found: re.Match[str]) -> Finding:
    name, count, names = found.groups()
    return Finding(
        f"{code(name + '()')} has {count} more parameter(s) than this call gives values for: "
        f"{names} did not get a value.",
        None,
        example(
            f"Pass a value for each parameter of {code(name + '()')}, in the order of its "
            "`def` line (or give the parameter a default value in the `def`):",
            'def describe(name, age):\n    ...\n\ndescribe("Ravi", 12)',
        ),
    )


def _not_iterable(ctx: Ctx, found: re.Match[str]) -> Finding:
    kind = found.group(1)
    why = (
        "A `for` loop (or `in`, `list()`, `sum()`) needs a collection to go through, but "
        f"it got {a(kind)}."
    )
    words = example("To count, loop over `range()`:", "for i in range(5):\n    print(i)")
    if kind != "int":
        return Finding(why, None, words)
    for node in ctx.nodes(ast.For, starting=True):
        assert isinstance(node, ast.For)
        count = source_of(ctx.program, node.iter)
        new = wrap_node(ctx.program, node.iter, "range(", ")")
        if new and count:
            why += f" To repeat something {code(count)} times, loop over a `range`."
            summary = f"Loop over `range({count})` to count through the numbers."
            return Finding(why, ctx.replace_line(new, summary), words)
    return Finding(why, None, words)


def _variable_uses(source: str, name: str) -> list[tuple[int, int, int]]:
    """Where `name` is used as a variable (not called, not an attribute): (row, start, end)."""
    found = tokens(source)
    uses: list[tuple[int, int, int]] = []
    skip = (tokenize.NL, tokenize.COMMENT)
    for index, token in enumerate(found):
        if token.type != tokenize.NAME or token.string != name:
            continue
        after = next((t for t in found[index + 1 :] if t.type not in skip), None)
        before = found[index - 1] if index else None
        if (after is not None and after.string == "(") or (before and before.string == "."):
            continue
        uses.append((token.start[0], token.start[1], token.end[1]))
    return uses


def _not_callable(ctx: Ctx, found: re.Match[str]) -> Finding:
    kind = found.group(1)
    words = example(
        "Only functions can be called with brackets. If a variable took a function's name, "
        "rename the variable; if you meant to multiply, write `*`:",
        "total = 0\nfor n in numbers:\n    total = total + n\nprint(sum(numbers))\n"
        "area = 2 * (3 + 4)",
    )
    tree = ctx.tree
    for node in ctx.nodes(ast.Call):
        assert isinstance(node, ast.Call)
        if tree is None or not isinstance(node.func, ast.Name):
            continue
        name = node.func.id
        stores = sorted(
            n.lineno
            for n in walk(tree)
            if isinstance(n, ast.Name) and n.id == name and isinstance(n.ctx, ast.Store)
        )
        if not stores:
            continue
        hidden = f", hiding Python's built-in {code(name + '()')}" if name in BUILTIN_NAMES else ""
        why = (
            f"{code(name)} is called like a function here, but line {stores[0]} made "
            f"{code(name)} a variable holding {a(kind)}{hidden}."
        )
        new_name = _SHADOW_RENAMES.get(name, f"{name}_value")
        while new_name in bound_names(tree):
            new_name += "_value"
        lines = ctx.program.code.split("\n")
        for row, start, end in sorted(_variable_uses(ctx.program.code, name), reverse=True):
            lines[row - 1] = lines[row - 1][:start] + new_name + lines[row - 1][end:]
        summary = (
            f"Rename the variable {code(name)} to {code(new_name)} so it no longer hides the "
            "function."
        )
        return Finding(why, checked(ctx.program.with_code("\n".join(lines), summary)), words)
    return Finding(
        f"Something called with `(...)` on this line is {a(kind)}, not a function. (To "
        "multiply, Python needs `*`: `2 * (x + 1)`, not `2(x + 1)`.)",
        None,
        words,
    )


def _not_subscriptable(ctx: Ctx, found: re.Match[str]) -> Finding:
    kind = found.group(1)
    why = (
        "Square brackets `[...]` read an item of a list, string or dict, but here they are "
        f"used on {a(kind)}."
    )
    if kind == "NoneType":
        return Finding(
            why + " The value is `None`, which usually comes from a function that ended "
            "without `return`ing anything (on some path).",
            None,
            example(
                "Make the function return a value on every path, and check for `None` "
                "before indexing:",
                'scores = find_scores("cara")\nif scores is not None:\n    print(scores[0])',
            ),
        )
    return Finding(why, None, example("Index lists, strings, tuples and dicts:", "print(items[0])"))


def _item_assignment(ctx: Ctx, found: re.Match[str]) -> Finding:
    kind = found.group(1)
    plural = "Strings" if kind == "str" else "Tuples"
    why = f"{plural} cannot be changed in place: no position of {a(kind)} can be assigned to."
    words = example(
        "Build a new value instead and assign it to the variable:",
        'word = "cat"\nword = "b" + word[1:]',
    )
    if kind != "str":
        return Finding(why, None, words)
    for node in ctx.nodes(ast.Assign):
        assert isinstance(node, ast.Assign)
        target = node.targets[0]
        if not (isinstance(target, ast.Subscript) and isinstance(target.value, ast.Name)):
            continue
        name, value = target.value.id, source_of(ctx.program, node.value)
        index = target.slice
        if isinstance(index, ast.Constant) and isinstance(index.value, int) and index.value >= 0:
            k = index.value
            head = "" if k == 0 else f"{name}[:{k}] + "
            expression = f"{head}{value} + {name}[{k + 1}:]"
        else:
            position = source_of(ctx.program, index)
            expression = f"{name}[:{position}] + {value} + {name}[{position} + 1:]"
        new = indent_of(ctx.text) + f"{name} = {expression}"
        summary = "Build a new string with the changed character and assign it back."
        return Finding(why, ctx.replace_line(new, summary), words)
    return Finding(why, None, words)


def _indices(ctx: Ctx, found: re.Match[str]) -> Finding:
    kind = found.group(1)
    why = f"The position inside `[...]` must be a whole number (int), but it is {a(kind)}."
    words = example(
        "Use a whole number as the position:",
        "middle = values[len(values) // 2]\nchoice = int(input())\nprint(colours[choice])",
    )
    for node in ctx.nodes(ast.Subscript):
        assert isinstance(node, ast.Subscript)
        index = node.slice
        if kind == "str" and isinstance(index, ast.Name) and _from_input(ctx, index):
            why += f" {code(index.id)} holds what `input()` returned, which is always text."
            summary = f"Convert {code(index.id)} to a whole number with `int()`."
            return Finding(why, ctx.convert(index, "int", summary), words)
        divisions = [
            n for n in ast.walk(index) if isinstance(n, ast.BinOp) and isinstance(n.op, ast.Div)
        ]
        if kind == "float" and divisions:
            division = divisions[0]
            left = source_of(ctx.program, division.left)
            right = source_of(ctx.program, division.right)
            new = (
                replace_node(ctx.program, division, f"{left} // {right}")
                if left and right
                else None
            )
            why += " `/` always gives a float (even `6 / 2` is `3.0`); `//` a whole number."
            return Finding(
                why, ctx.replace_line(new, "Divide with `//`, to a whole number."), words
            )
    return Finding(why, None, words)


def _join(ctx: Ctx, found: re.Match[str]) -> Finding:
    why = (
        f"`join` glues strings together, but item {found.group(1)} of the list is "
        f"{a(found.group(2))}, not a string."
    )
    words = example(
        "Convert each item with `str()` first:", 'print("-".join(str(n) for n in [1, 2, 3]))'
    )
    for node in ctx.nodes(ast.Call):
        assert isinstance(node, ast.Call)
        func = node.func
        if isinstance(func, ast.Attribute) and func.attr == "join" and len(node.args) == 1:
            items = source_of(ctx.program, node.args[0])
            new = replace_node(ctx.program, node.args[0], f"str(item) for item in {items}")
            summary = "Turn each item into a string before joining."
            return Finding(why, ctx.replace_line(new if items else None, summary), words)
    return Finding(why, None, words)


def _whole_number(ctx: Ctx, found: re.Match[str]) -> Finding:
    kind = found.group(1) or found.group(2)
    why = f"A whole number is needed here, but the value is {a(kind)}."
    words = example(
        "Convert text to a number first:", 'times = int(input("How many? "))\nprint("hi" * times)'
    )
    if kind == "str":
        for node in ctx.nodes(ast.Name):
            if isinstance(node, ast.Name) and _from_input(ctx, node):
                why += f" {code(node.id)} holds what `input()` returned, which is always text."
                summary = f"Convert {code(node.id)} to a whole number with `int()`."
                return Finding(why, ctx.convert(node, "int", summary), words)
    return Finding(why, None, words)


def _other(ctx: Ctx) -> Finding:
    return Finding(
        f"Python says *{ctx.error.message}*: a value of the wrong type reached this operation.",
        None,
        "Find which value on this line has the wrong type: print each one and its type just "
        "before the line, e.g. `print(repr(x), type(x))`, then convert it or use a value of "
        "the right type.",
    )


_HANDLERS: tuple[tuple[str, Handler], ...] = (
    (r'can only concatenate str \(not "(\w+)"\) to str', _concatenate),
    (r"unsupported operand type\(s\) for ([^:]+): '(\w+)' and '(\w+)'", _operands),
    (r"'([<>=!]+)' not supported between instances of '(\w+)' and '(\w+)'", _compare),
    (r"([\w.]+)\(\) takes (\d+) positional arguments? but (\d+) (?:were|was) given", _takes),
    (
        r"([\w.]+)\(\) missing (\d+) required (?:positional|keyword-only) arguments?: (.+)",
        _missing_argument,
    ),
    (r"'(\w+)' object is not iterable", _not_iterable),
    (r"'(\w+)' object is not callable", _not_callable),
    (r"'(\w+)' object is not subscriptable", _not_subscriptable),
    (r"'(str|tuple)' object does not support item assignment", _item_assignment),
    (r"(?:list|tuple|string) indices must be integers(?: or slices)?, not '?(\w+)'?", _indices),
    (r"sequence item (\d+): expected str instance, (\w+) found", _join),
    (
        r"can't multiply sequence by non-int of type '(\w+)'"
        r"|'(\w+)' object cannot be interpreted as an integer",
        _whole_number,
    ),
)


def type_rule(ctx: Ctx) -> Advice:
    finding = dispatch(ctx, _HANDLERS, _other)
    return Advice(
        general=TYPE_GENERAL,
        specific=ctx.specific(finding.why),
        fix=finding.fix,
        words=finding.words,
    )
