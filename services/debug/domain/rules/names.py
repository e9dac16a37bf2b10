"""NameError and UnboundLocalError: a name with no value where it is used.

The NameError rules go from the most to the least certain: Python's own "Did you
mean" (3.10+) or "Did you forget to import" (3.12+), `true`/`null` for `True`/`None`,
a standard module used without its import, a comprehension using the wrong loop name,
a name that exists but not yet or not here (defined further down, local to a function,
assigned in a `try` that failed), a close spelling, and text that lacks its quotes.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Callable

from services.debug.domain.edits import (
    Fix,
    bound_names,
    enclosing,
    function_at,
    indent_of,
    rename_name,
    replace_node,
    walk,
)
from services.debug.domain.rules.common import (
    BUILTIN_NAMES,
    COMPREHENSIONS,
    STDLIB_MODULES,
    Advice,
    Ctx,
    Finding,
    block,
    checked,
    close_name,
    code,
    first_binding,
)

NAME_GENERAL = (
    "Python met a name it does not know at the moment that line runs: a variable, "
    "function or module that has not been created or imported yet. The usual causes are "
    "a difference in spelling or capital letters, text that should be in quotes, a "
    "missing import, or using something before the line that creates it has run."
)
UNBOUND_GENERAL = (
    "A function uses one of its variables before giving it a value. Because the function "
    "assigns to that name somewhere, Python treats the name as the function's own (local) "
    "variable everywhere inside it, even on lines before the assignment and even if a "
    "variable with the same name exists outside the function."
)
_LITERAL_WORDS = {
    "true": "True",
    "false": "False",
    "none": "None",
    "null": "None",
    "nil": "None",
    "TRUE": "True",
    "FALSE": "False",
    "NULL": "None",
    "NONE": "None",
}


def _rename(ctx: Ctx, old: str, new: str, summary: str) -> Fix | None:
    """`old` renamed to `new`: everywhere when the program never creates `old` (every
    use is the same mistake), else on the offending line only."""
    tree = ctx.tree
    only = ctx.line if tree is not None and old in bound_names(tree) else None
    fixed = rename_name(ctx.program.code, old, new, only_line=only)
    return checked(ctx.program.with_code(fixed, summary))


def _insert_import(ctx: Ctx, module: str) -> Fix | None:
    """`import module` after the docstring and the imports at the top."""
    at = 1
    tree = ctx.tree
    if tree is not None and tree.body:
        body = tree.body
        index = 0
        at = body[0].lineno
        if isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
            at, index = (body[0].end_lineno or body[0].lineno) + 1, 1
        while index < len(body) and isinstance(body[index], ast.Import | ast.ImportFrom):
            at = (body[index].end_lineno or body[index].lineno) + 1
            index += 1
    summary = f"Import the `{module}` module before using it."
    return checked(ctx.program.replace(at, at - 1, [f"import {module}"], summary))


def _self_attribute(ctx: Ctx, name: str) -> Finding | None:
    suggestion = ctx.error.suggestion
    if not suggestion.startswith("self.") or not ctx.line:
        return None
    new = rename_name(ctx.program.code, name, suggestion, only_line=ctx.line)
    fix = ctx.replace_line(
        new.split("\n")[ctx.line - 1],
        f"Use {code(suggestion)}: in a method, the object's attributes are reached through `self`.",
    )
    return Finding(
        f"Inside a method, {code(name)} on its own is a local name; the object's value is "
        f"{code(suggestion)}.",
        fix,
    )


def _literal_word(ctx: Ctx, name: str) -> Finding | None:
    right = _LITERAL_WORDS.get(name)
    if right is None:
        return None
    return Finding(
        "Python's special values are written `True`, `False` and `None`, with a capital "
        f"first letter; {code(name)} is just an unknown name.",
        _rename(ctx, name, right, f"Write {code(right)} with a capital letter."),
    )


def _suggested(ctx: Ctx, name: str) -> Finding | None:
    suggestion = ctx.error.suggestion
    if not suggestion or suggestion.startswith("self."):
        return None
    where = first_binding(ctx.tree, suggestion) if ctx.tree is not None else None
    made = f" (created on line {where})" if where else ""
    return Finding(
        f"{code(name)} is not defined, but {code(suggestion)}{made} is: the spelling differs.",
        _rename(ctx, name, suggestion, f"Rename {code(name)} to {code(suggestion)}."),
    )


def _missing_import(ctx: Ctx, name: str) -> Finding | None:
    used_as_module = name in STDLIB_MODULES and re.search(rf"\b{re.escape(name)}\s*\.", ctx.text)
    module = ctx.error.missing_import or (name if used_as_module else "")
    if not module or (ctx.tree is not None and module in bound_names(ctx.tree)):
        return None
    return Finding(
        f"{code(name)} is a module of Python's standard library, and a module must be "
        "imported before it can be used.",
        _insert_import(ctx, module),
    )


def _comprehension_target(ctx: Ctx, name: str) -> Finding | None:
    for node in ctx.nodes(COMPREHENSIONS):
        assert isinstance(node, COMPREHENSIONS)
        targets = [generator.target for generator in node.generators]
        if len(targets) != 1 or not isinstance(targets[0], ast.Name):
            continue
        target = targets[0].id
        if any(isinstance(n, ast.Name) and n.id == name for n in ast.walk(node)):
            new = rename_name(ctx.text, name, target)
            return Finding(
                f"The comprehension's loop variable is {code(target)} (from "
                f"{code('for ' + target + ' in ...')}), but the expression before `for` "
                f"uses {code(name)}.",
                ctx.replace_line(new, f"Use the loop variable {code(target)}."),
            )
    return None


def _defined_later(ctx: Ctx, name: str) -> Finding | None:
    """Defined further down at the top level: the statement using it runs too early."""
    tree, line = ctx.tree, ctx.line
    if tree is None or line is None:
        return None
    later = [
        node
        for node in tree.body
        if node.lineno > line
        and (
            (isinstance(node, ast.FunctionDef | ast.ClassDef) and node.name == name)
            or (
                isinstance(node, ast.Assign)
                and any(isinstance(t, ast.Name) and t.id == name for t in node.targets)
            )
        )
    ]
    statement = next(
        (node for node in tree.body if node.lineno <= line <= (node.end_lineno or node.lineno)),
        None,
    )
    if not later or statement is None or isinstance(statement, ast.FunctionDef | ast.ClassDef):
        return None
    definition = later[0]
    start, end = statement.lineno, statement.end_lineno or statement.lineno
    after = definition.end_lineno or definition.lineno
    lines = ctx.program.lines
    moved = [*lines[: start - 1], *lines[end:after], "", *lines[start - 1 : end], *lines[after:]]
    while moved and not moved[0].strip():
        moved.pop(0)
    fix = checked(
        ctx.program.with_code(
            ctx.program.join(moved),
            f"Move the line that uses {code(name)} below the place where it is defined.",
        )
    )
    kind = "defined" if isinstance(definition, ast.FunctionDef | ast.ClassDef) else "assigned"
    return Finding(
        f"{code(name)} is {kind} on line {definition.lineno}, *after* line {line}. Python runs "
        f"a program from top to bottom, so at line {line} it does not exist yet.",
        fix,
    )


def _local_of_function(ctx: Ctx, name: str) -> Finding | None:
    """A variable of a function, used outside it: keep what the function returns."""
    tree, line = ctx.tree, ctx.line
    if tree is None or line is None:
        return None
    here = function_at(tree, line)
    for function in walk(tree):
        if not isinstance(function, ast.FunctionDef) or function is here:
            continue
        if not any(
            isinstance(n, ast.Return) and isinstance(n.value, ast.Name) and n.value.id == name
            for n in ast.walk(function)
        ):
            continue
        calls = [
            node
            for node in tree.body
            if isinstance(node, ast.Expr)
            and isinstance(node.value, ast.Call)
            and isinstance(node.value.func, ast.Name)
            and node.value.func.id == function.name
            and node.lineno < line
        ]
        if not calls:
            return Finding(
                f"{code(name)} only exists inside the function {code(function.name)}; "
                "outside it, use the value the function returns."
            )
        call = calls[-1].lineno
        text = ctx.program.line(call)
        new = indent_of(text) + f"{name} = " + text.lstrip()
        summary = f"Keep the value {code(function.name)} returns in {code(name)}."
        return Finding(
            f"{code(name)} is a variable *inside* the function {code(function.name)}; it "
            "exists only while the function runs. The function returns its value, but line "
            f"{call} calls it without keeping the result.",
            ctx.replace_line(new, summary, call),
        )
    return None


def _not_yet_assigned(ctx: Ctx, name: str) -> Finding | None:
    """Assigned on a line that did not run: in a `try` that failed, or a skipped branch."""
    tree, line = ctx.tree, ctx.line
    if tree is None or line is None:
        return None
    where = first_binding(tree, name)
    if where is None:
        return None
    if enclosing(tree, line, (ast.ExceptHandler,)):
        return Finding(
            f"{code(name)} would have been created on line {where}, inside the `try` block, "
            "but that line failed (that is why the `except` block is running), so "
            f"{code(name)} never got a value.",
            words=(
                f"In the `except` block, do not use {code(name)}: it only exists when the "
                "`try` block succeeded. Use the values you had before the `try`, e.g.:\n\n"
                + block(
                    "try:\n    number = int(text)\nexcept ValueError:\n"
                    '    print("Not a number: " + text)'
                )
            ),
        )
    return Finding(
        f"{code(name)} is created on line {where}, but that line has not run when line {line} "
        "runs (it is in a function, a branch or a loop that was skipped)."
    )


def _close_spelling(ctx: Ctx, name: str) -> Finding | None:
    bound = bound_names(ctx.tree) if ctx.tree is not None else set()
    close = close_name(name, bound | BUILTIN_NAMES)
    if not close:
        return None
    where = first_binding(ctx.tree, close) if ctx.tree is not None else None
    made = f", which your program creates on line {where}" if where else ", a name Python knows"
    return Finding(
        f"{code(name)} does not exist, but there is {code(close)}{made}: check the spelling.",
        _rename(ctx, name, close, f"Rename {code(name)} to {code(close)}."),
    )


def _missing_quotes(ctx: Ctx, name: str) -> Finding | None:
    if not name.isalpha():
        return None
    for node in ctx.nodes((ast.Compare, ast.Call)):
        if isinstance(node, ast.Compare):
            operands = [node.left, *node.comparators]
        elif isinstance(node, ast.Call):
            operands = list(node.args)
        else:
            continue
        for operand in operands:
            if isinstance(operand, ast.Name) and operand.id == name:
                new = replace_node(ctx.program, operand, f'"{name}"')
                return Finding(
                    f"{code(name)} is written without quotes, so Python reads it as the name "
                    f"of a variable, and no variable has that name. If you mean the text "
                    f"*{name}*, it needs quotes.",
                    ctx.replace_line(new, f"Put the text {code(name)} in quotes."),
                )
    return None


_NAME_RULES: tuple[Callable[[Ctx, str], Finding | None], ...] = (
    _self_attribute,
    _literal_word,
    _suggested,
    _missing_import,
    _comprehension_target,
    _defined_later,
    _local_of_function,
    _not_yet_assigned,
    _close_spelling,
    _missing_quotes,
)


def name_rule(ctx: Ctx) -> Advice:
    free = re.search(r"free variable '(\w+)'", ctx.error.message)
    if free:
        return unbound_rule(ctx, free.group(1))
    found = re.search(r"name '(\w+)' is not defined", ctx.error.message)
    name = found.group(1) if found else ""
    finding = next((f for rule in _NAME_RULES if (f := rule(ctx, name)) is not None), None)
    if finding is None:
        finding = Finding(
            f"Nothing called {code(name)} has been created before this line runs: there is "
            "no assignment, function, parameter or import with that name."
        )
    words = finding.words or (
        f"Make sure {code(name)} exists before line {ctx.line} runs: assign it a value (or "
        "define the function, or import the module) above this line, or correct the "
        "spelling to the name you created. For example:\n\n"
        + block('name = "Ada"      # created first\nprint(name)       # then used')
    )
    return Advice(
        general=NAME_GENERAL,
        specific=f"Line {ctx.line}: {ctx.quote()} uses {code(name)}. {finding.why}",
        fix=finding.fix,
        words=words,
    )


def _assigned_at_top(tree: ast.Module | None, name: str) -> bool:
    if tree is None:
        return False
    for node in tree.body:
        targets: list[ast.expr] = []
        if isinstance(node, ast.Assign):
            targets = list(node.targets)
        elif isinstance(node, ast.AugAssign | ast.AnnAssign):
            targets = [node.target]
        if any(isinstance(t, ast.Name) and t.id == name for t in targets):
            return True
    return False


def unbound_rule(ctx: Ctx, name: str = "") -> Advice:
    if not name:
        found = re.search(r"variable '(\w+)'", ctx.error.message)
        name = found.group(1) if found else ""
    function = ctx.function()
    fix: Fix | None = None
    words = explanation = ""
    if function is not None and _assigned_at_top(ctx.tree, name):
        first = function.body[0]
        at = first.lineno
        if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
            at = function.body[1].lineno if len(function.body) > 1 else at
        indent = indent_of(ctx.program.line(at))
        summary = (
            f"Declare {code(name)} global in {code(function.name)}, so the function changes "
            "the program's variable."
        )
        fix = checked(ctx.program.replace(at, at - 1, [f"{indent}global {name}"], summary))
        why = (
            f"{code(name)} exists at the top of your program, but the function "
            f"{code(function.name)} also assigns to {code(name)}, which makes it a separate, "
            f"local variable inside the function, and that one has no value yet on line "
            f"{ctx.line}."
        )
        explanation = (
            "`global` works, but a cleaner design is to pass the value in as a parameter "
            "and return the new value, for example:\n\n"
            + block(
                f"def {function.name}({name}):\n    ...\n    return {name}\n\n"
                f"{name} = {function.name}({name})"
            )
        )
    else:
        scope = function or ast.Module(body=[], type_ignores=[])
        assigned = sorted(
            {
                n.lineno
                for n in ast.walk(scope)
                if isinstance(n, ast.Name) and n.id == name and isinstance(n.ctx, ast.Store)
            }
        )
        places = ", ".join(str(n) for n in assigned) or "a line that did not run"
        why = (
            f"{code(name)} only gets a value on line(s) {places}, and on this run none of "
            f"those lines ran before line {ctx.line} (a branch of an `if` or a loop was "
            "skipped)."
        )
        words = (
            f"Give {code(name)} a value on every path before it is used, for example a "
            "default value before the `if`, or an `else` branch:\n\n"
            + block(
                'letter = "C"          # the default\nif score >= 90:\n    letter = "A"\n'
                "return letter"
            )
        )
    return Advice(
        general=UNBOUND_GENERAL,
        specific=f"Line {ctx.line}: {ctx.quote()} reads {code(name)}. {why}",
        fix=fix,
        words=words,
        explanation=explanation,
    )
