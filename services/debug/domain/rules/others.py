"""ZeroDivisionError, ModuleNotFoundError and ImportError, RecursionError,
FileNotFoundError, StopIteration, AssertionError, and errors raised on purpose."""

from __future__ import annotations

import ast
import re

from services.debug.domain.edits import (
    Fix,
    indent_of,
    is_simple,
    rename_name,
    replace_node,
    source_of,
    statement_at,
    walk,
    wrap_node,
)
from services.debug.domain.rules.attributes import module_names
from services.debug.domain.rules.common import (
    STDLIB_MODULES,
    Advice,
    Ctx,
    Finding,
    block,
    checked,
    close_name,
    code,
    example,
)
from services.kit import pyast

ZERO_GENERAL = (
    "The program divided by zero (with `/`, `//` or `%`), which has no answer. The number "
    "on the right of the division became 0: often an empty list's length, a count that "
    "never went up, or a loop that starts at 0."
)
MODULE_GENERAL = (
    "An `import` line names a module Python cannot find: the name may be misspelt (module "
    "names are case-sensitive), it may be a package that has to be installed first, or "
    "your own file may not be where Python looks."
)
IMPORT_GENERAL = (
    "The module was found, but the name you asked to import from it does not exist in it: "
    "check its spelling and capital letters against the module's documentation."
)
RECURSION_GENERAL = (
    "A function kept calling itself without ever stopping, until Python gave up (about "
    "1000 calls deep). A recursive function needs a base case, a condition under which it "
    "returns without calling itself, and each call must get closer to that case."
)
FILE_GENERAL = (
    "The program tried to open a file that is not where it looked. Python looks for a "
    "relative file name in the folder the program is *run from*, and the name must match "
    "exactly, including the extension and capital letters."
)
STOP_GENERAL = (
    "`next()` asked an iterator (or a generator) for one more item after it had already "
    "given all of its items."
)
ASSERT_GENERAL = (
    "An `assert` checked a condition that turned out to be false. An assert states "
    "something the program expects to be true; when it fails, either a value computed "
    "earlier is wrong or the expectation is."
)
_THIRD_PARTY = {
    "numpy": "numpy",
    "pandas": "pandas",
    "requests": "requests",
    "matplotlib": "matplotlib",
    "pygame": "pygame",
    "flask": "flask",
    "django": "django",
    "bs4": "beautifulsoup4",
    "PIL": "pillow",
    "cv2": "opencv-python",
    "sklearn": "scikit-learn",
    "scipy": "scipy",
    "yaml": "pyyaml",
    "tensorflow": "tensorflow",
    "torch": "torch",
    "seaborn": "seaborn",
    "pytest": "pytest",
    "dotenv": "python-dotenv",
}
_IMPORT_ALIASES = {
    "squareroot": "sqrt",
    "square_root": "sqrt",
    "sqroot": "sqrt",
    "power": "pow",
    "absolute": "fabs",
    "random_int": "randint",
    "randInteger": "randint",
    "average": "mean",
    "avg": "mean",
}


# --- ZeroDivisionError ------------------------------------------------------------------


def _guard_division(ctx: Ctx, statement: ast.stmt, guard: str) -> Fix | None:
    summary = f"Only divide when {code(guard)} is not 0 (and use 0 as the answer when it is)."
    if isinstance(statement, ast.Assign | ast.Return) and statement.value is not None:
        new = wrap_node(ctx.program, statement.value, "", f" if {guard} != 0 else 0")
        return ctx.replace_line(new, summary)
    if isinstance(statement, ast.If | ast.While):
        new = wrap_node(ctx.program, statement.test, f"{guard} != 0 and ", "")
        return ctx.replace_line(new, f"Only test the division when {code(guard)} is not 0.")
    if isinstance(statement, ast.Expr | ast.AugAssign):
        return ctx.guard_statement(f"{guard} != 0", f"Only divide when {code(guard)} is not 0.")
    return None


def zero_rule(ctx: Ctx) -> Advice:
    fix: Fix | None = None
    why = "The value on the right of the division is 0."
    divisions = [
        node
        for node in ctx.nodes(ast.BinOp)
        if isinstance(node, ast.BinOp)
        and isinstance(node.op, ast.Div | ast.FloorDiv | ast.Mod)
        and not (isinstance(node.right, ast.Constant) and node.right.value != 0)
    ]
    if divisions and ctx.tree is not None and ctx.line is not None:
        division = divisions[0]
        assert isinstance(division, ast.BinOp)
        divisor = source_of(ctx.program, division.right)
        guard = divisor if is_simple(division.right) else f"({divisor})"
        why = f"{code(divisor)} is 0 when this line runs, and nothing can be divided by 0."
        statement = statement_at(ctx.tree, ctx.line)
        one_line = statement.test if isinstance(statement, ast.If | ast.While) else statement
        on_one_line = one_line is not None and one_line.lineno == one_line.end_lineno == ctx.line
        if statement is not None and on_one_line and divisor:
            fix = _guard_division(ctx, statement, guard)
    return Advice(
        general=ZERO_GENERAL,
        specific=ctx.specific(why),
        fix=fix,
        words=example(
            "Check the divisor before dividing, and decide what the answer should be when it is 0:",
            "if len(numbers) > 0:\n    average = sum(numbers) / len(numbers)\n"
            "else:\n    average = 0",
        ),
    )


# --- ModuleNotFoundError and ImportError ------------------------------------------------


def module_rule(ctx: Ctx) -> Advice:
    found = re.search(
        r"No module named '([\w.]+)'|module '([\w.]+)' was not found", ctx.error.message
    )
    name = ((found.group(1) or found.group(2)) if found else "").split(".")[0]
    close = ctx.error.suggestion or close_name(name, STDLIB_MODULES, cutoff=0.8)
    fix: Fix | None = None
    words = ""
    if name in _THIRD_PARTY:
        why = (
            f"{code(name)} is not part of Python's standard library: it is a separate package "
            "that must be installed before it can be imported."
        )
        words = (
            "Install it on your computer from a terminal (not from Python):\n\n"
            f"```\npip install {_THIRD_PARTY[name]}\n```\n\nand then the import works:\n\n"
            + block(ctx.text.strip() or f"import {name}")
            + "\n\nLearnFlow's sandbox only has Python's standard library, so programs run "
            "here cannot use it."
        )
    elif close:
        fixed = rename_name(ctx.program.code, name, close)
        fix = checked(
            ctx.program.with_code(fixed, f"Import {code(close)}: module names are exact.")
        )
        why = f"There is no module {code(name)}; Python's standard library has {code(close)}."
    else:
        why = (
            f"No module {code(name)} is installed, in the standard library, or next to your "
            "program."
        )
        words = (
            f"If {code(name)} is your own file, make sure it is called `{name}.py` and is in "
            "the same folder as the program you run. If it is a package from the internet, "
            f"install it with `pip install {name}`, then:\n\n" + block(f"import {name}")
        )
    return Advice(general=MODULE_GENERAL, specific=ctx.specific(why), fix=fix, words=words)


def import_rule(ctx: Ctx) -> Advice:
    message = ctx.error.message
    found = re.match(r"cannot import name '(\w+)' from '([\w.]+)'", message)
    words = example(
        "Import a name the module really has, for example:",
        "from math import sqrt\nprint(sqrt(49))",
    )
    fix: Fix | None = None
    if not found:
        why = f"Python says *{message}*."
        if "circular import" in message or "partially initialized" in message:
            why += " Two of your files import each other, or your file has a module's name."
        elif "relative import" in message:
            why += " `from . import x` only works inside a package; use `import x` instead."
    else:
        name, module = found.groups()
        why = f"The module {code(module)} has nothing called {code(name)}."
        names = module_names(module)
        close = ctx.error.suggestion or _IMPORT_ALIASES.get(name, "")
        if close and names and close not in names:
            close = ""
        close = close or close_name(name, names, cutoff=0.7)
        if close:
            fixed = rename_name(ctx.program.code, name, close)
            summary = f"Import {code(close)}, the name {code(module)} really has."
            fix = checked(ctx.program.with_code(fixed, summary))
            why += f" It has {code(close)}."
    return Advice(general=IMPORT_GENERAL, specific=ctx.specific(why), fix=fix, words=words)


# --- RecursionError ---------------------------------------------------------------------


def _same_argument(ctx: Ctx, function: ast.FunctionDef, call: ast.Call, param: str) -> Finding:
    why = (
        f"Each call passes {code(param)} on unchanged, so every call gets exactly the same "
        "problem and the base case is never reached."
    )
    indexed = any(
        isinstance(n, ast.Subscript)
        and isinstance(n.value, ast.Name)
        and n.value.id == param
        and isinstance(n.slice, ast.Constant)
        and n.slice.value == 0
        for n in ast.walk(function)
    )
    if not indexed:
        return Finding(why)
    new = replace_node(ctx.program, call.args[0], f"{param}[1:]")
    summary = f"Pass the rest of the list, {code(param + '[1:]')}, so each call has one item fewer."
    return Finding(
        why + f" After using {code(param + '[0]')}, pass the rest: {code(param + '[1:]')}.",
        ctx.replace_line(new, summary, call.lineno),
    )


def _base_case_jumped(ctx: Ctx, function: ast.FunctionDef, param: str, step: int) -> Finding | None:
    """`if n == 0:` with n going down by 2 (or from a negative start) is jumped over."""
    for node in ast.walk(function):
        test = node.test if isinstance(node, ast.If) else None
        if not (
            isinstance(test, ast.Compare)
            and len(test.ops) == 1
            and isinstance(test.ops[0], ast.Eq)
            and isinstance(test.left, ast.Name)
            and test.left.id == param
        ):
            continue
        limit = source_of(ctx.program, test.comparators[0])
        op = "<=" if step > 0 else ">="
        new = replace_node(ctx.program, test, f"{param} {op} {limit}")
        summary = f"Stop when {code(param)} reaches *or passes* {code(limit)}."
        return Finding(
            f"The base case on line {test.lineno} only stops when {code(param)} is *exactly* "
            f"{code(limit)}, but {code(param)} changes by {abs(step)} each call and can jump "
            f"over {code(limit)}; then it never stops.",
            ctx.replace_line(new, summary, test.lineno),
        )
    return None


def _no_base_case(ctx: Ctx, function: ast.FunctionDef, param: str) -> Finding | None:
    """`return n * f(n - 1)` with no `if` at all: add the base case of the operation."""
    body = function.body[0]
    if len(function.body) != 1 or not isinstance(body, ast.Return):
        return None
    value = body.value
    if not (isinstance(value, ast.BinOp) and isinstance(value.op, ast.Mult | ast.Add)):
        return None
    limit, result = ("1", "1") if isinstance(value.op, ast.Mult) else ("0", "0")
    indent = indent_of(ctx.program.line(body.lineno))
    unit = ctx.program.indent_unit()
    summary = (
        f"Add a base case: when {code(param)} reaches {limit}, return {result} without calling "
        f"{code(function.name)} again."
    )
    lines = [f"{indent}if {param} <= {limit}:", f"{indent}{unit}return {result}"]
    return Finding(
        f"{code(function.name)} has no base case: no `if` returns without calling "
        f"{code(function.name)} again, so {code(param)} goes down forever.",
        checked(ctx.program.replace(body.lineno, body.lineno - 1, lines, summary)),
    )


def _step(call: ast.Call, param: str) -> int:
    """How much the first argument goes down per call (`n - 2`: 2, `n + 1`: -1, else 0)."""
    argument = call.args[0] if call.args else None
    if not (
        isinstance(argument, ast.BinOp)
        and isinstance(argument.left, ast.Name)
        and argument.left.id == param
        and isinstance(argument.right, ast.Constant)
        and isinstance(argument.right.value, int)
    ):
        return 0
    size = argument.right.value
    return (
        size
        if isinstance(argument.op, ast.Sub)
        else -size
        if isinstance(argument.op, ast.Add)
        else 0
    )


def _recursion_finding(ctx: Ctx, function: ast.FunctionDef) -> Finding | None:
    params = [arg.arg for arg in function.args.args]
    calls = [
        node
        for node in ast.walk(function)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id == function.name
    ]
    if not calls or not params or not calls[0].args:
        return None
    param, call = params[0], calls[0]
    if isinstance(call.args[0], ast.Name) and call.args[0].id == param:
        return _same_argument(ctx, function, call, param)
    step = _step(call, param)
    has_if = any(isinstance(node, ast.If) for node in ast.walk(function))
    if step and has_if:
        return _base_case_jumped(ctx, function, param, step)
    if step > 0 and not has_if:
        return _no_base_case(ctx, function, param)
    return None


def recursion_rule(ctx: Ctx) -> Advice:
    function = ctx.function()
    name = function.name if function is not None else ctx.error.function or "the function"
    finding = None
    if isinstance(function, ast.FunctionDef):
        finding = _recursion_finding(ctx, function)
    finding = finding or Finding(
        f"{code(name)} calls itself again and again and never reaches a point where it stops."
    )
    return Advice(
        general=RECURSION_GENERAL,
        specific=f"Line {ctx.line}: {ctx.quote()}, in {code(name)}. {finding.why}",
        fix=finding.fix,
        words=example(
            "Give the function a base case that returns without recursing, and make each "
            "call work on a smaller problem:",
            "def factorial(n):\n    if n <= 1:          # base case\n        return 1\n"
            "    return n * factorial(n - 1)",
        ),
    )


# --- FileNotFoundError, StopIteration, AssertionError, raise -------------------------------


def file_rule(ctx: Ctx) -> Advice:
    found = re.search(r"No such file or directory: '(.+)'", ctx.error.message)
    missing = found.group(1) if found else ""
    why = f"There is no file {code(missing)} where the program looked."
    fix: Fix | None = None
    if missing and ctx.tree is not None:
        names = {
            node.value
            for node in walk(ctx.tree)
            if isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and node.value != missing
            and re.fullmatch(r"[\w./\\ -]+\.\w{1,5}", node.value)
        }
        close = close_name(missing, names, cutoff=0.8)
        literals = [
            node
            for node in ctx.nodes(ast.Constant)
            if isinstance(node, ast.Constant) and node.value == missing
        ]
        if close and literals:
            literal = source_of(ctx.program, literals[0])
            quote = literal[:1] or '"'
            new = replace_node(ctx.program, literals[0], f"{quote}{close}{quote}")
            fix = ctx.replace_line(new, f"Open {code(close)}, the file the program writes.")
            why += f" The program itself uses {code(close)} elsewhere: the two names differ."
        elif not literals and ctx.error.function:
            why += (
                f" The name was passed into {code(ctx.error.function)} by the line that called it."
            )
    return Advice(
        general=FILE_GENERAL,
        specific=ctx.specific(why),
        fix=fix,
        words=example(
            "Check the file's exact name and folder, or create it first; you can check before "
            "opening it:",
            'import os\n\nif os.path.exists("scores.txt"):\n    with open("scores.txt") as f:\n'
            '        print(f.read())\nelse:\n    print("scores.txt is missing")',
        ),
    )


def stop_rule(ctx: Ctx) -> Advice:
    why = "An iterator had no items left when `next()` asked for another one."
    fix: Fix | None = None
    for node in ctx.nodes(ast.Call):
        assert isinstance(node, ast.Call)
        if isinstance(node.func, ast.Name) and node.func.id == "next" and len(node.args) == 1:
            iterator = source_of(ctx.program, node.args[0])
            new = wrap_node(ctx.program, node.args[0], "", ", None")
            fix = ctx.replace_line(new, "Give `next()` a default, returned when nothing is left.")
            why = (
                f"{code(iterator)} has already given all its items, so "
                f"{code(f'next({iterator})')} has nothing left to give."
            )
            break
    return Advice(
        general=STOP_GENERAL,
        specific=ctx.specific(why),
        fix=fix,
        words=example(
            "Give `next()` a default value, or loop with `for`, which stops by itself:",
            "item = next(colours, None)\nfor colour in colours:\n    print(colour)",
        ),
    )


def _assert_values(condition: str) -> list[str]:
    """The values an assert's condition reads (calls and names), at most three."""
    try:
        tree = pyast.parse_module(condition)
    except (SyntaxError, ValueError):
        return []
    called = {id(n.func) for n in ast.walk(tree) if isinstance(n, ast.Call)}
    values = [
        ast.get_source_segment(condition, node) or ""
        for node in ast.walk(tree)
        if isinstance(node, ast.Call | ast.Name) and id(node) not in called
    ]
    return [value for value in dict.fromkeys(values) if value][:3]


def assert_rule(ctx: Ctx) -> Advice:
    condition = ""
    for node in ctx.nodes(ast.Assert):
        assert isinstance(node, ast.Assert)
        condition = source_of(ctx.program, node.test)
    message = f" Its message: *{ctx.error.message}*." if ctx.error.message else ""
    what = f"the condition {code(condition)}" if condition else "its condition"
    shown = _assert_values(condition) if condition else []
    sample = "result = add(2, 3)\nprint(result)        # 5 expected\nassert result == 5"
    if shown:
        sample = "\n".join(f"print({value!r}, {value})" for value in shown)
        sample += f"\nassert {condition}"
    return Advice(
        general=ASSERT_GENERAL,
        specific=ctx.specific(f"The assert on this line checks {what}, and it was false.{message}"),
        words=example(
            "Print the values the condition uses just before the assert, see which one is not "
            "what you expect, and fix the code that computed it (or the expectation):",
            sample,
        ),
    )


def raised_rule(ctx: Ctx, cause_specific: str = "") -> Advice:
    """An error the student's own `raise` statement raised (or any other type)."""
    kind = ctx.error.short_type
    if not re.match(r"raise\b", ctx.text.strip()):
        return Advice(
            general=(
                f"Python stopped with a {kind}. The last line of the traceback says what went "
                "wrong, and the frames above it show where."
            ),
            specific=ctx.specific(f"Python says *{ctx.error.message or kind}*."),
            words=(
                "Print the values used on this line just before it runs, to see which one is "
                "not what you expect, then trace back where it came from:\n\n"
                + block("print(repr(value), type(value))")
            ),
        )
    why = f"Line {ctx.line} raises {code(kind)} itself."
    if ctx.causes:
        cause = ctx.causes[-1]
        why += (
            f" It does so while handling an earlier {cause.short_type}, which is the real "
            f"cause: {cause_specific}"
        )
    return Advice(
        general=(
            "This error was raised on purpose by a `raise` statement in your program, to "
            "report a situation the code cannot handle. Find out which situation led there."
        ),
        specific=ctx.specific(why),
        words=(
            "Fix the situation that made your code raise the error (the earlier error in the "
            "traceback, or the value that was checked), or catch the error where the program "
            "can do something sensible about it:\n\n"
            + block(f'try:\n    ...\nexcept {kind} as error:\n    print("Sorry:", error)')
        ),
    )
