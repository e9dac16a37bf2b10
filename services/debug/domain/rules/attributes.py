"""AttributeError: a `.name` the value does not have.

In order: your own file named like the module it imports (3.13 says so), Python's own
"Did you mean" (3.10+), `None` from a list method whose result was kept
(`x = x.append(1)`), method names borrowed from other languages or descriptive ones
(`push`, `uppercase`, `.length`), an attribute `__init__` forgot to put on `self`, and a
close spelling among the class's or the module's names.
"""

from __future__ import annotations

import ast
import builtins
import importlib
import re

from services.debug.domain.edits import indent_of, rename_attribute, replace_node, source_of, walk
from services.debug.domain.rules.common import (
    Advice,
    Ctx,
    Finding,
    a,
    capitalised,
    checked,
    close_name,
    code,
    example,
)

ATTRIBUTE_GENERAL = (
    "The program used a `.name` (a method or attribute) that the value does not have. "
    "Each type has its own methods, so the value may be of a different type than you "
    "think, the method name may be misspelt or borrowed from another language, or the "
    "value may be `None`."
)
# Names from other languages, and descriptive ones, for the built-in types' methods;
# "" when there is no method for it (`len()`, `in`).
_ALIASES: dict[str, dict[str, str]] = {
    "list": {"push": "append", "add": "append", "push_back": "append"},
    "str": {
        "uppercase": "upper",
        "toUpperCase": "upper",
        "upperCase": "upper",
        "to_upper": "upper",
        "lowercase": "lower",
        "toLowerCase": "lower",
        "lowerCase": "lower",
        "to_lower": "lower",
        "trim": "strip",
    },
    "set": {"append": "add", "push": "add"},
    "dict": {},
    "tuple": {},
}
_LENGTH_NAMES = frozenset({"length", "size", "len", "count_items"})
_MEMBERSHIP_NAMES = frozenset({"contains", "has_key", "includes"})
_MUTATORS = frozenset(
    {"append", "extend", "insert", "sort", "reverse", "remove", "clear", "update", "add"}
    | {"shuffle", "discard"}
)
# Modules whose public names may be listed to suggest a name (importing them has no
# side effects).
SAFE_MODULES = frozenset(
    {"math", "random", "string", "statistics", "datetime", "time", "collections"}
    | {"itertools", "functools", "json", "re", "csv", "os", "sys", "fractions", "decimal"}
    | {"operator", "copy", "textwrap", "calendar"}
)


def module_names(module: str) -> list[str]:
    """The public names of a standard module from SAFE_MODULES ([] for any other)."""
    if module not in SAFE_MODULES:
        return []
    try:
        loaded = importlib.import_module(module)
    except ImportError:
        return []
    return [name for name in dir(loaded) if not name.startswith("_")]


def _renamed(ctx: Ctx, old: str, new: str, summary: str) -> Finding:
    fixed = rename_attribute(ctx.program.code, old, new)
    return Finding("", checked(ctx.program.with_code(fixed, summary)))


def _none_kept(ctx: Ctx, attr: str) -> Finding:
    why = (
        f"The value before {code('.' + attr)} is `None`, which has no methods. `None` "
        "usually comes from a function that returns nothing."
    )
    tree, line = ctx.tree, ctx.line
    if tree is None or line is None:
        return Finding(why)
    objects = {
        node.value.id
        for node in ctx.nodes(ast.Attribute)
        if isinstance(node, ast.Attribute)
        and node.attr == attr
        and isinstance(node.value, ast.Name)
    }
    for node in walk(tree):
        if not (
            isinstance(node, ast.Assign)
            and node.lineno < line
            and len(node.targets) == 1
            and isinstance(node.targets[0], ast.Name)
            and node.targets[0].id in objects
            and isinstance(node.value, ast.Call)
            and isinstance(node.value.func, ast.Attribute)
            and node.value.func.attr in _MUTATORS
            and isinstance(node.value.func.value, ast.Name)
            and node.value.func.value.id == node.targets[0].id
        ):
            continue
        name, method = node.targets[0].id, node.value.func.attr
        new = indent_of(ctx.program.line(node.lineno)) + source_of(ctx.program, node.value)
        summary = f"Call {code('.' + method + '()')} on its own: it changes the list in place."
        return Finding(
            f"Line {node.lineno} stores the result of {code(name + '.' + method + '()')} back "
            f"into {code(name)}. {code('.' + method + '()')} changes the list in place and "
            f"returns `None`, so from then on {code(name)} is `None`.",
            ctx.replace_line(new, summary, node.lineno),
        )
    return Finding(why)


def _length(ctx: Ctx, attr: str) -> Finding:
    why = " The length of a value is found with the built-in function `len(value)`."
    for node in ctx.nodes((ast.Call, ast.Attribute)):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            value = node.func.value if node.func.attr == attr and not node.args else None
        elif isinstance(node, ast.Attribute):
            value = node.value if node.attr == attr else None
        else:
            value = None
        inner = source_of(ctx.program, value) if value is not None else ""
        if inner:
            new = replace_node(ctx.program, node, f"len({inner})")
            return Finding(why, ctx.replace_line(new, "Use the built-in `len()`."))
    return Finding(why)


def _builtin_method(ctx: Ctx, owner: str, attr: str) -> Finding | None:
    if owner not in _ALIASES:
        return None
    if attr in _LENGTH_NAMES:
        return _length(ctx, attr)
    if attr in _MEMBERSHIP_NAMES:
        return Finding(" To check whether something is in a collection, use `in`: `x in items`.")
    alias = _ALIASES[owner].get(attr) or close_name(
        attr, [n for n in dir(getattr(builtins, owner)) if not n.startswith("_")], cutoff=0.7
    )
    if not alias:
        return None
    found = _renamed(ctx, attr, alias, f"Use {code('.' + alias)}, the {owner} method for this.")
    return Finding(f" The {owner} method for this is {code('.' + alias + '()')}.", found.fix)


def _init_forgot_self(ctx: Ctx, owner: str, attr: str) -> Finding | None:
    if ctx.tree is None:
        return None
    for cls in walk(ctx.tree):
        if not (isinstance(cls, ast.ClassDef) and cls.name == owner):
            continue
        for method in cls.body:
            if not (isinstance(method, ast.FunctionDef) and method.name == "__init__"):
                continue
            for statement in ast.walk(method):
                if (
                    isinstance(statement, ast.Assign)
                    and len(statement.targets) == 1
                    and isinstance(statement.targets[0], ast.Name)
                    and statement.targets[0].id == attr
                ):
                    text = ctx.program.line(statement.lineno)
                    new = indent_of(text) + "self." + text.lstrip()
                    summary = f"Store the value on the object: `self.{attr} = ...`."
                    return Finding(
                        f"`__init__` (line {statement.lineno}) assigns {code(attr)} as a plain "
                        "local variable, which disappears when `__init__` ends. To keep it on "
                        f"the object, it must be stored as {code('self.' + attr)}.",
                        ctx.replace_line(new, summary, statement.lineno),
                    )
        known = {
            node.attr
            for node in ast.walk(cls)
            if isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id == "self"
            and isinstance(node.ctx, ast.Store)
        } | {m.name for m in cls.body if isinstance(m, ast.FunctionDef)}
        close = close_name(attr, known, cutoff=0.7)
        if close:
            found = _renamed(ctx, attr, close, f"Use {code('.' + close)}.")
            return Finding(
                f"Objects of the class {code(owner)} have {code(close)}, not {code(attr)}.",
                found.fix,
            )
        return Finding(
            f"Nothing in the class {code(owner)} creates {code('self.' + attr)}: an attribute "
            "only exists after a line like `self.name = ...` has run (usually in `__init__`)."
        )
    return None


def _module_attribute(ctx: Ctx, module: str, attr: str) -> Finding:
    why = f"The module {code(module)} has no attribute {code(attr)}."
    if "consider renaming" in ctx.error.message or "circular import" in ctx.error.message:
        return Finding(
            f"Your own file is named like the module {code(module)}, so `import {module}` "
            "imported your file instead of Python's module.",
            words=(
                f"Rename your file (for example to `my_{module}_program.py`) and delete any "
                f"`{module}.pyc` file or `__pycache__` folder next to it:\n\n"
                + f"```python\nimport {module}    # now Python's own module\n```"
            ),
        )
    close = ctx.error.suggestion or close_name(attr, module_names(module), cutoff=0.7)
    if not close:
        return Finding(why)
    found = _renamed(ctx, attr, close, f"Use {code(module + '.' + close)}.")
    return Finding(f"{why} It has {code(close)}.", found.fix)


def attribute_rule(ctx: Ctx) -> Advice:
    message = ctx.error.message
    on_object = re.match(r"'(\w+)' object has no attribute '(\w+)'", message)
    on_module = re.match(
        r"(?:partially initialized )?module '([\w.]+)'(?: from '[^']*')? has no attribute '(\w+)'",
        message,
    )
    matched = on_object or on_module
    owner, attr = (matched.group(1), matched.group(2)) if matched else ("", "")
    base = f"{capitalised(a(owner))} has no attribute {code(attr)}."
    suggestion = ctx.error.suggestion
    finding: Finding | None
    if on_module:
        finding = _module_attribute(ctx, owner, attr)
    elif suggestion and not suggestion.startswith("_"):
        found = _renamed(
            ctx, attr, suggestion, f"Use {code('.' + suggestion)}, not {code('.' + attr)}."
        )
        finding = Finding(
            f"{base} There is {code('.' + suggestion)}, spelt differently.", found.fix
        )
    elif owner == "NoneType":
        finding = _none_kept(ctx, attr)
    else:
        finding = _builtin_method(ctx, owner, attr) or _init_forgot_self(ctx, owner, attr)
        if finding is not None and finding.why.startswith(" "):
            finding = Finding(base + finding.why, finding.fix, finding.words)
    finding = finding or Finding(base)
    words = finding.words or example(
        "Use a method the value's type has; `dir(value)` lists them. For example:",
        'name = "ada"\nprint(name.upper())\ntodo = []\ntodo.append("homework")',
    )
    return Advice(
        general=ATTRIBUTE_GENERAL,
        specific=ctx.specific(finding.why),
        fix=finding.fix,
        words=words,
    )
