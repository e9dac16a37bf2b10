"""The hint ladder: its order, the guard that keeps the fix out of the early levels, the
rules on cases outside the evaluation set (other versions' messages, other beginner
mistakes), and robustness on odd input. Fixes are really run in the sandbox."""

from __future__ import annotations

import pytest
from learnflow.common.v1 import common_pb2
from learnflow.debug.v1 import debug_pb2

from services.debug.domain.edits import Fix, Program, compiles
from services.debug.domain.hints import (
    HintLadder,
    HintLevel,
    LadderError,
    build_hints,
    leaks_fix,
    normalise_code,
)
from services.debug.domain.rules import advise
from services.debug.domain.topics import Topic, topic_for, topic_for_error
from services.debug.domain.traceback import ParsedError, parse_traceback
from tests.debug.conftest import Runs

G, S, X = HintLevel.GENERAL, HintLevel.SPECIFIC, HintLevel.SOLUTION


# --- the ladder -------------------------------------------------------------------------


def test_ladder_goes_general_specific_solution_then_stops() -> None:
    assert HintLadder.next_level([]) is G
    assert HintLadder.next_level([G]) is S
    assert HintLadder.next_level([G, S]) is X
    assert HintLadder.next_level([G, S, X]) is None


@pytest.mark.parametrize("revealed", [[S], [X], [G, X], [G, G], [S, G], [G, S, X, X], [G, S, S]])
def test_ladder_refuses_skipped_repeated_or_reordered_levels(revealed: list[HintLevel]) -> None:
    with pytest.raises(LadderError):
        HintLadder.next_level(revealed)


def test_reveal_only_the_next_level() -> None:
    assert HintLadder.reveal([], G) == (G,)
    assert HintLadder.reveal([G], S) == (G, S)
    with pytest.raises(LadderError, match="next hint level is GENERAL"):
        HintLadder.reveal([], X)  # the solution before anything else
    with pytest.raises(LadderError, match="next hint level is SPECIFIC"):
        HintLadder.reveal([G], X)  # the solution before the specific hint
    with pytest.raises(LadderError, match="already been revealed"):
        HintLadder.reveal([G, S, X], X)


def test_enum_values_match_the_contract() -> None:
    for level in HintLevel:
        assert debug_pb2.HintLevel.Value(f"HINT_LEVEL_{level.name}") == level.value
    for topic in Topic:
        assert common_pb2.Topic.Value(f"TOPIC_{topic.name}") == topic.value


# --- the guard --------------------------------------------------------------------------


def _fix(corrected: str, program: str) -> Fix:
    return Fix(fixed_code=program, lines=(1,), corrected_lines=(corrected,), summary="")


def test_leaks_fix_ignores_whitespace() -> None:
    fix = _fix("area = length * width", "length = 2\narea = length * width\n")
    assert leaks_fix("try `area=length*width`", fix)
    assert leaks_fix("Line 2 should read:\n  area  =  length *\n width", fix)
    assert not leaks_fix("check the spelling of the names on line 2", fix)
    assert not leaks_fix("anything", None)
    assert normalise_code(" a = 1\n\tb ") == "a=1b"


def test_leaks_fix_allows_quoting_the_students_own_line() -> None:
    """An indentation fix's corrected line is the student's line: quoting it is fine."""
    fix = _fix('print("Hello", name)', 'for name in names:\n    print("Hello", name)\n')
    quoted = 'Line 3: `print("Hello", name)` is not indented.'
    assert leaks_fix(quoted, fix)
    assert not leaks_fix(quoted, fix, original_lines=['print("Hello", name)'])


def test_general_hint_gets_plainer_rather_than_give_the_fix_away() -> None:
    """The fix's corrected line is `total`, the function's own name: the general hint
    must not say "inside the function `total`"."""
    code = "def total():\n    totl\n\n\ntotal()\n"
    tb = (
        "Traceback (most recent call last):\n"
        '  File "main.py", line 5, in <module>\n    total()\n'
        '  File "main.py", line 2, in total\n    totl\n'
        "NameError: name 'totl' is not defined\n"
    )
    parsed = parse_traceback(tb, code)
    assert parsed is not None
    hints = build_hints(parsed, code)
    assert hints.corrected_lines == ("total",)
    assert "    total" in hints.solution.fixed_code.splitlines()
    assert "total" not in hints.general.text
    assert "line 2" in hints.general.text


def test_fix_is_dropped_when_no_general_wording_avoids_it() -> None:
    """A corrected line of one short word that every general wording contains."""
    code = "the = 1\ntha\n"
    error = ParsedError("NameError", "name 'tha' is not defined", line=2, source_line="tha")
    hints = build_hints(error, code)
    assert hints.fix is None and hints.solution.fixed_code == ""
    assert "the" in normalise_code(hints.general.text)
    assert hints.solution.text.strip()


# --- hints from a parsed error ----------------------------------------------------------


def _hints(traceback: str, code: str) -> tuple[ParsedError, str, str, str, str]:
    parsed = parse_traceback(traceback, code)
    assert parsed is not None
    hints = build_hints(parsed, code)
    return (
        parsed.error,
        hints.general.text,
        hints.specific.text,
        hints.solution.text,
        hints.solution.fixed_code,
    )


def _tb(line: int, source: str, error: str, function: str = "<module>") -> str:
    return (
        "Traceback (most recent call last):\n"
        f'  File "main.py", line {line}, in {function}\n'
        f"    {source.strip()}\n"
        f"{error}\n"
    )


def _syntax_tb(line: int, source: str, caret: int, error: str) -> str:
    return f'  File "main.py", line {line}\n    {source.strip()}\n    {" " * caret}^\n{error}\n'


def test_only_the_solution_carries_code_and_it_compiles() -> None:
    code = "length = 12\nwidth = 5\narea = lenght * width\nprint(area)\n"
    tb = _tb(3, "area = lenght * width", "NameError: name 'lenght' is not defined")
    _, general, specific, solution, fixed = _hints(tb, code)
    assert "area = length * width" in fixed and compiles(fixed)
    assert "`length`" in specific and "lenght" in specific
    assert "length" not in general and "line 3" in general
    assert "area = length * width" in solution


def test_python_38_missing_colon_message() -> None:
    code = "x = 3\nif x > 2\n    print(x)\n"
    tb = _syntax_tb(2, "if x > 2", 8, "SyntaxError: invalid syntax")
    *_, fixed = _hints(tb, code)
    assert fixed.splitlines()[1] == "if x > 2:"


def test_python_38_eof_message_closes_the_bracket() -> None:
    code = "prices = [3, 4]\nprint(sum(prices)\n"
    tb = _syntax_tb(2, "print(sum(prices)", 17, "SyntaxError: unexpected EOF while parsing")
    *_, fixed = _hints(tb, code)
    assert fixed.splitlines()[1] == "print(sum(prices))"


def test_python_312_import_hint_gives_the_import() -> None:
    code = "print(random.randint(1, 6))\n"
    tb = _tb(
        1,
        code,
        "NameError: name 'random' is not defined. Did you forget to import 'random'?",
    )
    error, *_, fixed = _hints(tb, code)
    assert error.missing_import == "random"
    assert fixed == "import random\nprint(random.randint(1, 6))\n"
    assert topic_for_error(error, code) is Topic.MODULES


def test_python_312_self_suggestion() -> None:
    code = (
        "class Car:\n    def __init__(self):\n        self.speed = 0\n\n"
        "    def drive(self):\n        print(speed)\n\n\nCar().drive()\n"
    )
    tb = _tb(
        6,
        "print(speed)",
        "NameError: name 'speed' is not defined. Did you mean: 'self.speed'?",
        "drive",
    )
    error, *_, fixed = _hints(tb, code)
    assert "        print(self.speed)" in fixed.splitlines()
    assert topic_for_error(error, code) is Topic.CLASSES_AND_OBJECTS


def test_smart_quotes_pasted_from_a_document() -> None:
    code = "print(\u201cHello\u201d)\n"
    tb = _syntax_tb(1, code, 6, "SyntaxError: invalid character '\u201c' (U+201C)")
    *_, fixed = _hints(tb, code)
    assert fixed == 'print("Hello")\n'


def test_indentation_fix_takes_the_whole_block_when_one_line_is_not_enough() -> None:
    code = "for n in [1, 2]:\nif n > 1:\n    print(n)\n"
    tb = (
        '  File "main.py", line 2\n    if n > 1:\n    ^\n'
        "IndentationError: expected an indented block after 'for' statement on line 1\n"
    )
    *_, fixed = _hints(tb, code)
    assert fixed == "for n in [1, 2]:\n    if n > 1:\n        print(n)\n"


def test_no_fix_is_invented_when_nothing_certain_is_known() -> None:
    code = "def f(x):\n    return x[3]\n\nprint(f([1]))\n"
    tb = _tb(2, "return x[3]", "IndexError: list index out of range", "f")
    _, _, specific, solution, fixed = _hints(tb, code)
    assert fixed == ""
    assert "```python" in solution
    assert specific.startswith("Line 2:")


def test_an_error_without_a_line() -> None:
    parsed = parse_traceback("KeyError: 'bob'")
    assert parsed is not None
    hints = build_hints(parsed, "")
    assert hints.solution.fixed_code == ""
    assert "does not say which line" in hints.general.text
    assert topic_for(parsed, "") is Topic.COLLECTIONS


def test_chain_general_hint_names_both_errors() -> None:
    code = (
        'ages = {}\ntry:\n    print(ages["bo"])\nexcept KeyError:\n'
        '    raise ValueError("unknown")\n'
    )
    tb = (
        _tb(3, 'print(ages["bo"])', "KeyError: 'bo'")
        + "\nDuring handling of the above exception, another exception occurred:\n\n"
        + _tb(5, 'raise ValueError("unknown")', "ValueError: unknown")
    )
    parsed = parse_traceback(tb, code)
    assert parsed is not None
    hints = build_hints(parsed, code)
    assert "a KeyError happened first (line 3)" in hints.general.text
    assert "raised on purpose" in hints.general.text
    assert "`ages` has no key `'bo'`" in hints.specific.text
    assert topic_for(parsed, code) is Topic.ERRORS_AND_EXCEPTIONS


@pytest.mark.parametrize(
    ("code", "error"),
    [
        ("", ParsedError("NameError", "name 'x' is not defined", line=3)),
        ("x = (\n", ParsedError("SyntaxError", "'(' was never closed", line=1, column=5)),
        ("print(1)\n", ParsedError("TypeError", "weird message", line=40)),
        ("a b c d\n", ParsedError("KeyError", "'k'", line=1, column=99, end_column=120)),
        ("x = 1\n", ParsedError("Oops", "", line=1)),
        ("\t\tx = 1\n", ParsedError("TabError", "inconsistent use of tabs", line=1)),
        ("def f(:\n", ParsedError("IndentationError", "unexpected indent", line=1)),
        ("x = [1]\n" * 3, ParsedError("RecursionError", "maximum recursion depth", line=2)),
        ("import os\n", ParsedError("ModuleNotFoundError", "No module named ''", line=1)),
        ("d = {}\nd[1] += 1\n", ParsedError("KeyError", "1", line=2)),
        (
            "s = 'é'\nprint(s[5])\n",
            ParsedError("IndexError", "string index out of range", line=2, column=7, end_column=10),
        ),
    ],
)
def test_odd_input_never_breaks_the_ladder(code: str, error: ParsedError) -> None:
    hints = build_hints(error, code)
    for level in HintLadder.ORDER:
        assert hints.at(level).level is level
        assert hints.at(level).text.strip()
    assert not leaks_fix(hints.general.text, hints.fix)
    if hints.solution.fixed_code:
        assert compiles(hints.solution.fixed_code) or error.is_syntax


# --- fixes outside the evaluation set, really run -----------------------------------------

EXTRA = [
    # (code, stdin, error type)
    ('name = input()\nprint("Hi " + name + ", you are " + 12 + " today")\n', "Ana\n", "TypeError"),
    (
        "total = 0\nfor i in range(1, 4):\n    total = total + i\nprint('sum', totl)\n",
        "",
        "NameError",
    ),
    ("points = {'ann': 3}\npoints['bob'] = points['bob'] + 1\nprint(points)\n", "", "KeyError"),
    (
        "items = ['a', 'b']\nfor i in range(len(items) + 1):\n    print(items[i].upper())\n",
        "",
        "IndexError",
    ),
    (
        "def count_up(n):\n    if n == 10:\n        return n\n    return count_up(n + 3)\n\n"
        "print(count_up(0))\n",
        "",
        "RecursionError",
    ),
    ("scores = [3, 5]\nscores = scores.sort()\nprint(scores.count(3))\n", "", "AttributeError"),
    ("import Math\nprint(Math.floor(2.5))\n", "", "ModuleNotFoundError"),
    ("from statistics import average\nprint(average([1, 2]))\n", "", "ImportError"),
    ("n = int(input())\nfor i in n:\n    print(i)\n", "3\n", "TypeError"),
    ("values = []\nmean = sum(values) // len(values)\nprint(mean)\n", "", "ZeroDivisionError"),
]


@pytest.mark.parametrize(
    ("code", "stdin", "kind"), EXTRA, ids=[e[2] + str(i) for i, e in enumerate(EXTRA)]
)
def test_fixes_of_other_beginner_programs_really_work(
    code: str, stdin: str, kind: str, sandbox_run: Runs
) -> None:
    before = sandbox_run(code, stdin)
    parsed = parse_traceback(before.stderr, code)
    assert parsed is not None and parsed.error.error_type == kind, before.stderr
    hints = build_hints(parsed, code)
    assert hints.solution.fixed_code, hints.solution.text
    for line in hints.corrected_lines:
        assert normalise_code(line) not in normalise_code(hints.general.text)
    after = sandbox_run(hints.solution.fixed_code, stdin)
    assert after.exit_code == 0, after.stderr


def test_advise_uses_the_chain_for_errors_raised_on_purpose() -> None:
    cause = ParsedError("FileNotFoundError", "[Errno 2] No such file or directory: 'a.txt'", line=1)
    error = ParsedError(
        "RuntimeError", "no settings", line=4, source_line="raise RuntimeError('no settings')"
    )
    code = "try:\n    open('a.txt')\nexcept OSError:\n    raise RuntimeError('no settings')\n"
    advice = advise(error, code, causes=[cause])
    assert "earlier FileNotFoundError" in advice.specific
    assert "`a.txt`" in advice.specific
    assert advice.fix is None


def test_program_keeps_a_missing_final_newline() -> None:
    program = Program("x = 1\nprint(y)")
    fix = program.replace(2, 2, ["print(x)"], "")
    assert fix.fixed_code == "x = 1\nprint(x)"


def test_a_64_kib_program_is_hinted_in_bounded_time() -> None:
    """Syntax fixes compile the whole program per candidate, renames tokenize it: the
    worst case stays far below a request's deadline."""

    body = "".join(f"def f{i}(x):\n    y = x + {i}\n    return y * 2\n\n" for i in range(1400))
    assert len(body) > 60_000
    cases = [
        (body + "for n in range(3):\nprint(n)\n" + "print(n)\n" * 300, "IndentationError",
         "expected an indented block after 'for' statement on line 5601", 5602),
        (body + "ages = [12, 15 17, 14]\n", "SyntaxError",
         "invalid syntax. Perhaps you forgot a comma?", 5601),
        (body + "length = 3\nprint(lenght)\n" + "print(lenght)\n" * 200, "NameError",
         "name 'lenght' is not defined. Did you mean: 'length'?", 5602),
    ]  # fmt: skip
    for code, kind, message, line in cases:
        error = parse_traceback(f"{kind}: {message}")
        assert error is not None
        located = ParsedError(
            kind, error.error.message, line=line, suggestion=error.error.suggestion
        )
        # How long this takes is bench/bench_debug_parse.py's business; here: it works.
        hints = build_hints(located, code)
        assert hints.solution.fixed_code, kind
