"""Which curriculum topic a request is about.

Evidence, strongest first: what the error says (its type, its message), what the
student names in their words, and what their code does (read with `ast` when it
parses). Each source is a table of weighted patterns; the topic with the most weight
wins if it has enough.
"""

from __future__ import annotations

import ast
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from services.kit import pyast
from services.kit.topics import ERROR_TOPICS
from services.kit.topics import Topic as Topic  # noqa: PLC0414 - re-exported on purpose
from services.triage.domain.structure import Structure

T = Topic

# Words in the student's prose. Multi-word and specific terms weigh more than the
# generic ones they contain ("list comprehension" beats "list", "generator function"
# beats "function", "exception class" beats "class").
PROSE_CUES: tuple[tuple[Topic, str, float], ...] = (
    (T.VARIABLES_AND_TYPES, r"\bvariables?\b", 2.0),
    (T.VARIABLES_AND_TYPES, r"\btype conversion\b|\bconvert(ing)?\b|\bcast(ing)?\b", 2.0),
    (T.VARIABLES_AND_TYPES, r"\b(int|float|bool|integers?|booleans?|none|numbers?)\b", 1.0),
    (T.VARIABLES_AND_TYPES, r"%|\bmodulo\b|//|\boperators?\b|==", 1.5),
    (T.CONTROL_FLOW, r"\b(for|while)[ -]?loops?\b|\bloops?\b|\bloop(ing)? over\b", 2.5),
    (T.CONTROL_FLOW, r"\bif[ -](statements?|else)\b|\belif\b|\bbreak\b|\bcontinue\b", 2.5),
    (T.CONTROL_FLOW, r"\bwhile\b|\bfizz ?buzz\b|\bconditions?\b", 1.0),
    (T.CONTROL_FLOW, r"\brange\(|\bboucles?\b|\bbucles?\b|\bschleifen?\b", 1.5),
    (T.FUNCTIONS, r"\bfunctions?\b|\bdef\b|\breturn\b|\blambdas?\b|\bdecorators?\b", 2.0),
    (T.FUNCTIONS, r"\b(arguments?|parameters?|args|kwargs|scope|global|pass by)\b", 2.0),
    (T.STRINGS, r"\bstrings?\b|\bf-?strings?\b|\.format\(|\bslic(e|es|ing)\b", 2.5),
    (T.STRINGS, r"\bcharacters?\b|\bsubstrings?\b|\bcha[iî]nes?\b|\bcadenas?\b", 2.0),
    (T.COLLECTIONS, r"\blists?\b|\btuples?\b|\bsets?\b|\barrays?\b", 1.5),
    (T.COLLECTIONS, r"\bdict(s|ionary|ionaries|ionnaire|ionario)?\b|\bdiccionarios?\b", 2.5),
    (T.COMPREHENSIONS, r"\bcomprehensions?\b|\blist comp\b", 4.0),
    (T.FILES, r"\bfiles?\b|\bopen\(|\bcsv\b|\bwith statement\b|\bfolders?\b|\bpaths?\b", 2.5),
    # "try" and "raise" are English verbs too ("i'd like to try", "raise my score").
    (T.ERRORS_AND_EXCEPTIONS, r"\bexceptions?\b|\btry\s*(/|-|and|&)?\s*except\b|\bfinally\b", 2.5),
    (T.ERRORS_AND_EXCEPTIONS, r"\btry (blocks?|statements?|clauses?)\b|\btry:|\bexcept:", 2.5),
    (T.ERRORS_AND_EXCEPTIONS, r"\braise (an?|my own|a custom)?\s*\w*(error|exception)", 2.5),
    (T.ERRORS_AND_EXCEPTIONS, r"\berror handling\b|\bhandle errors\b|\bcatch\b", 2.0),
    (T.MODULES, r"\bmodules?\b|\bimports?\b|\bpackages?\b|\bpip\b|__name__|__main__", 2.5),
    (T.MODULES, r"\banother file\b|\bother file\b|\blibrar(y|ies)\b", 1.5),
    (T.CLASSES_AND_OBJECTS, r"\bclass(es)?\b|\bobjects?\b|\bself\b|__init__|\boop\b", 2.0),
    (T.CLASSES_AND_OBJECTS, r"\bmethods?\b|\binherit(ance|s)?\b|\binstances?\b", 2.0),
    (T.ITERATORS_AND_GENERATORS, r"\bgenerators?\b|\byield\b|\biterators?\b|\biter\(", 3.5),
    (T.ITERATORS_AND_GENERATORS, r"\bnext\(|\bitertools\b|\biterables?\b", 2.5),
    (T.TESTING, r"\bpytest\b|\bunittest\b|\bassert\b|\bunit tests?\b|\btest cases?\b", 3.0),
    (T.TESTING, r"\b(my|the|write|writing) tests\b", 1.0),
    (T.RECURSION, r"\brecursi\w*|\bbase case\b|\bcalls? itself\b", 4.0),
)

ERROR_TYPE_WEIGHT = 3.0

# What the error message says, for types whose topic depends on it.
ERROR_MESSAGES: tuple[tuple[Topic, str], ...] = (
    (T.VARIABLES_AND_TYPES, r"invalid literal for (int|float)\(\)|could not convert"),
    (T.VARIABLES_AND_TYPES, r"unsupported operand type|can only concatenate|must be str, not"),
    (T.STRINGS, r"string (index|indices|literal)|'str' object does not support item|f-string"),
    (T.STRINGS, r"format (code|spec|string)|for object of type 'str'"),
    (
        T.COLLECTIONS,
        r"list ind(ex|ices)|'(list|dict|tuple|set)' object|(dictionary|list|set) changed",
    ),
    (T.COLLECTIONS, r"(from|of) empty (list|dict|set)"),
    (T.CLASSES_AND_OBJECTS, r"__init__\(\)|\bself\b"),
    (T.FUNCTIONS, r"required positional argument|takes \d+ positional argument"),
    (T.FUNCTIONS, r"'nonetype' object"),
    (T.ITERATORS_AND_GENERATORS, r"generator"),
)
ERROR_MESSAGE_WEIGHT = 3.0

# "expected an indented block after 'for' statement", and the keyword that starts the
# failing line of a traceback: the construct the student broke.
STATEMENTS: Mapping[str, Topic] = {
    "for": T.CONTROL_FLOW,
    "while": T.CONTROL_FLOW,
    "if": T.CONTROL_FLOW,
    "elif": T.CONTROL_FLOW,
    "else": T.CONTROL_FLOW,
    "def": T.FUNCTIONS,
    "return": T.FUNCTIONS,
    "lambda": T.FUNCTIONS,
    "class": T.CLASSES_AND_OBJECTS,
    "try": T.ERRORS_AND_EXCEPTIONS,
    "except": T.ERRORS_AND_EXCEPTIONS,
    "raise": T.ERRORS_AND_EXCEPTIONS,
    "with": T.FILES,
    "import": T.MODULES,
    "from": T.MODULES,
    "yield": T.ITERATORS_AND_GENERATORS,
    "assert": T.TESTING,
}
STATEMENT_WEIGHT = 1.5

# Constructs in the code, with each topic's total from code capped: code is the
# weakest evidence (every program has loops and lists), the student's words and the
# error are stronger.
CODE_CAP = 2.5
# (topic, weight) per construct found by `_code_constructs`.
CODE_CUES: Mapping[str, tuple[Topic, float]] = {
    "self_call": (T.RECURSION, 3.0),
    "yield": (T.ITERATORS_AND_GENERATORS, 2.5),
    "iter_next": (T.ITERATORS_AND_GENERATORS, 1.0),
    "class": (T.CLASSES_AND_OBJECTS, 2.0),
    "comprehension": (T.COMPREHENSIONS, 1.75),
    "open": (T.FILES, 2.0),
    "try": (T.ERRORS_AND_EXCEPTIONS, 1.75),
    "raise": (T.ERRORS_AND_EXCEPTIONS, 1.0),
    "test": (T.TESTING, 2.0),
    "import": (T.MODULES, 0.5),
    "def": (T.FUNCTIONS, 1.0),
    "lambda": (T.FUNCTIONS, 1.0),
    "global": (T.FUNCTIONS, 1.5),
    "while": (T.CONTROL_FLOW, 1.0),
    "for": (T.CONTROL_FLOW, 0.75),
    "if": (T.CONTROL_FLOW, 0.5),
    "elif": (T.CONTROL_FLOW, 1.0),
    "collection": (T.COLLECTIONS, 0.5),
    "dict": (T.COLLECTIONS, 0.75),
    "string_method": (T.STRINGS, 0.75),
    "fstring": (T.STRINGS, 0.5),
    "slice": (T.STRINGS, 0.5),
    "conversion": (T.VARIABLES_AND_TYPES, 0.5),
    "string_concat": (T.STRINGS, 0.75),
}

# Regex stand-ins for code that does not parse (half-written code often does not).
_CODE_REGEXES: Mapping[str, str] = {
    "yield": r"\byield\b",
    "iter_next": r"\b(iter|next)\(",
    "class": r"^\s*class \w+",
    "comprehension": r"[\[{(][^\]\n]*\bfor\b[^\]\n]*\bin\b",
    "open": r"\bopen\(",
    "try": r"^\s*(try|except\b)",
    "raise": r"^\s*raise\b",
    "test": r"^\s*(def test_\w*|assert\b)",
    "import": r"^\s*(import|from \S+ import)\b",
    "def": r"^\s*def \w+",
    "lambda": r"\blambda\b",
    "global": r"^\s*(global|nonlocal)\b",
    "while": r"^\s*while\b",
    "for": r"^\s*for\b",
    "if": r"^\s*if\b",
    "elif": r"^\s*elif\b",
    "collection": r"\.append\(|\[\s*\]|\w\[\w+\]",
    "dict": r"\{\s*\}|\{\s*['\"\w]+\s*:",
    "string_method": r"\.(split|join|upper|lower|strip|replace|startswith|endswith)\(",
    "fstring": r"\bf['\"]",
    "slice": r"\[[^\]\n]*:[^\]\n]*\]",
    "conversion": r"\b(int|float|str)\(",
    "string_concat": r"['\"]\s*\+|\+\s*['\"]",
}


@dataclass(frozen=True)
class TopicGuess:
    """The topic chosen (None when nothing weighs enough) and why."""

    topic: Topic | None
    evidence: str


MIN_WEIGHT = 1.0
# Code is the weakest topic evidence: its first lines up to this size are enough, and
# keep a 64 KiB paste from costing tens of milliseconds.
CODE_LIMIT = 8_000


# Node types that are a construct by themselves.
_NODE_CONSTRUCTS: tuple[tuple[type[ast.AST] | tuple[type[ast.AST], ...], str], ...] = (
    ((ast.Yield, ast.YieldFrom), "yield"),
    (ast.ClassDef, "class"),
    ((ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp), "comprehension"),
    (ast.Try, "try"),
    (ast.Raise, "raise"),
    (ast.Assert, "test"),
    ((ast.Import, ast.ImportFrom), "import"),
    (ast.Lambda, "lambda"),
    ((ast.Global, ast.Nonlocal), "global"),
    (ast.While, "while"),
    (ast.For, "for"),
    (ast.If, "if"),
    ((ast.List, ast.Tuple, ast.Set, ast.Subscript), "collection"),
    (ast.Dict, "dict"),
    (ast.JoinedStr, "fstring"),
    (ast.Slice, "slice"),
)
# Calls by function name and by method name.
_CALLS: Mapping[str, str] = {
    "open": "open",
    "iter": "iter_next",
    "next": "iter_next",
    "int": "conversion",
    "float": "conversion",
    "str": "conversion",
}
_METHODS: Mapping[str, str] = {
    **dict.fromkeys(
        ("split", "join", "upper", "lower", "strip", "replace", "startswith", "endswith"),
        "string_method",
    ),
    "append": "collection",
    **dict.fromkeys(("keys", "values", "items", "get"), "dict"),
}


def _calls_itself(function: ast.FunctionDef) -> bool:
    return any(
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id == function.name
        for statement in function.body
        for node in ast.walk(statement)
    )


# The same, by exact node class: one dict lookup per node instead of a scan.
_BY_NODE_CLASS: Mapping[type[ast.AST], str] = {
    cls: name
    for types, name in _NODE_CONSTRUCTS
    for cls in (types if isinstance(types, tuple) else (types,))
}


def _node_constructs(node: ast.AST) -> Iterable[str]:
    name = _BY_NODE_CLASS.get(type(node))
    if name:
        yield name
    if isinstance(node, ast.FunctionDef):
        yield "test" if node.name.startswith("test") else "def"
        if _calls_itself(node):
            yield "self_call"
    elif isinstance(node, ast.If) and len(node.orelse) == 1 and isinstance(node.orelse[0], ast.If):
        yield "elif"
    elif isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        # "Hello " + name: string building.
        if any(
            isinstance(side, ast.Constant) and isinstance(side.value, str)
            for side in (node.left, node.right)
        ):
            yield "string_concat"
    elif isinstance(node, ast.Call):
        if isinstance(node.func, ast.Name) and node.func.id in _CALLS:
            yield _CALLS[node.func.id]
        elif isinstance(node.func, ast.Attribute) and node.func.attr in _METHODS:
            yield _METHODS[node.func.attr]
    elif (
        isinstance(node, ast.Attribute)
        and isinstance(node.value, ast.Name)
        and node.value.id == "self"
    ):
        yield "class"


def _code_constructs(code: str) -> set[str]:
    """The constructs code uses (names in CODE_CUES), from its syntax tree if it parses."""
    if len(code) > CODE_LIMIT:
        code = code[: code.rfind("\n", 0, CODE_LIMIT) + 1] or code[:CODE_LIMIT]
    try:
        tree = pyast.parse_module(code)
    except (SyntaxError, ValueError):
        return {name for name, rx in _CODE_REGEXES_COMPILED if rx.search(code)}
    return {name for node in ast.walk(tree) for name in _node_constructs(node)}


def _prose_weights(prose: str) -> Iterable[tuple[Topic, float, str]]:
    for topic, pattern, weight in _PROSE_COMPILED:
        found = pattern.search(prose)
        if found:
            yield topic, weight, f'"{found.group(0).strip()}"'


def _error_weights(structure: Structure) -> Iterable[tuple[Topic, float, str]]:
    if structure.error_type in ERROR_TOPICS:
        yield ERROR_TOPICS[structure.error_type], ERROR_TYPE_WEIGHT, f"the {structure.error_type}"
    elif not structure.error_type:
        # "what's a KeyError": an error named in the prose, with no message.
        for name, topic in ERROR_TOPICS.items():
            if re.search(rf"\b{name.lower()}\b", structure.prose):
                yield topic, ERROR_TYPE_WEIGHT, f"the {name} named"
                break
    message = structure.error_message.lower()
    for topic, pattern in _MESSAGES_COMPILED:
        if pattern.search(message):
            yield topic, ERROR_MESSAGE_WEIGHT, "the error message"
            break
    statement = re.search(r"after '(\w+)' statement", message)
    keyword = statement[1] if statement else ""
    if not keyword and structure.failing_line:
        first = re.match(r"\w+", structure.failing_line)
        keyword = first.group(0) if first else ""
    if keyword in STATEMENTS:
        yield STATEMENTS[keyword], STATEMENT_WEIGHT, f"the failing '{keyword}' line"


def detect_topic(structure: Structure) -> TopicGuess:
    """The topic with the most weight across error, prose and code evidence."""
    weights: defaultdict[Topic, float] = defaultdict(float)
    reasons: dict[Topic, str] = {}

    for topic, weight, why in (*_error_weights(structure), *_prose_weights(structure.prose)):
        weights[topic] += weight
        reasons.setdefault(topic, why)
    if structure.has_code:
        from_code: defaultdict[Topic, float] = defaultdict(float)
        for construct in _code_constructs(structure.code):
            topic, weight = CODE_CUES[construct]
            from_code[topic] += weight
        for topic, weight in from_code.items():
            weights[topic] += min(weight, CODE_CAP)
            reasons.setdefault(topic, "the code")

    if not weights:
        return TopicGuess(None, "")
    # Ties go to the later curriculum topic, usually the more specific one
    # (comprehensions over collections, recursion over functions).
    best = max(weights, key=lambda t: (weights[t], t.value))
    if weights[best] < MIN_WEIGHT:
        return TopicGuess(None, "")
    return TopicGuess(best, reasons[best])


_CODE_REGEXES_COMPILED = tuple((name, re.compile(rx, re.M)) for name, rx in _CODE_REGEXES.items())
_PROSE_COMPILED = tuple((t, re.compile(p), w) for t, p, w in PROSE_CUES)
_MESSAGES_COMPILED = tuple((t, re.compile(p)) for t, p in ERROR_MESSAGES)
