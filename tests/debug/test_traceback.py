"""Traceback parsing: hand-written tracebacks of the versions not installed here (3.8,
3.9, 3.10, 3.12, 3.13, see tracebacks/expected.yaml), real 3.11 output for exception
groups and notes, and the ways students paste tracebacks."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from services.debug.domain.traceback import (
    ParsedTraceback,
    is_library_file,
    parse_traceback,
    short_type,
)
from tests.debug.conftest import TRACEBACKS, Runs

FIXTURES: dict[str, dict[str, Any]] = yaml.safe_load((TRACEBACKS / "expected.yaml").read_text())[
    "tracebacks"
]
FIELDS = {
    "type": "error_type",
    "message": "message",
    "line": "line",
    "column": "column",
    "end_line": "end_line",
    "end_column": "end_column",
    "source_line": "source_line",
    "function": "function",
    "suggestion": "suggestion",
    "missing_import": "missing_import",
}


def test_every_fixture_file_has_expectations_and_every_version_is_covered() -> None:
    files = {str(path.relative_to(TRACEBACKS)) for path in TRACEBACKS.rglob("*.txt")}
    assert files == set(FIXTURES)
    versions = {name.split("/")[0] for name in files}
    assert versions == {"3.8", "3.9", "3.10", "3.12", "3.13"}
    for version in versions:
        assert sum(name.startswith(version + "/") for name in files) >= 5


@pytest.mark.parametrize("name", sorted(FIXTURES))
def test_fixture(name: str) -> None:
    expected = FIXTURES[name]
    text = (TRACEBACKS / name).read_text()
    parsed = parse_traceback(text, expected.get("code", ""))
    assert parsed is not None
    error = parsed.error
    for key, attribute in FIELDS.items():
        if key in expected:
            assert getattr(error, attribute) == expected[key], key
    assert list(error.notes) == expected.get("notes", [])
    assert [[e.error_type, e.line] for e in parsed.chain] == expected.get("chain", [])
    if "sub_errors" in expected:
        assert [[e.error_type, e.line] for e in error.sub_errors] == expected["sub_errors"]
    if "student_file" in expected:
        assert parsed.student_file == expected["student_file"]


def test_nothing_to_parse() -> None:
    assert parse_traceback("") is None
    assert parse_traceback("   \n") is None
    assert parse_traceback("Hello, world\nthe program printed this\n") is None


def test_an_error_line_alone() -> None:
    parsed = parse_traceback("IndexError: list index out of range")
    assert parsed is not None
    assert (parsed.error.error_type, parsed.error.message, parsed.error.line) == (
        "IndexError",
        "list index out of range",
        None,
    )
    alone = parse_traceback("NameError: name 'lenght' is not defined. Did you mean: 'length'?\n")
    assert alone is not None and alone.error.suggestion == "length"


def test_output_before_the_traceback_and_crlf() -> None:
    text = (
        "Enter a number: \r\n"
        'main.py:3: SyntaxWarning: "is" with a literal. Did you mean "=="?\r\n'
        "Traceback (most recent call last):\r\n"
        '  File "main.py", line 4, in <module>\r\n'
        "    print(10 / n)\r\n"
        "ZeroDivisionError: division by zero\r\n"
    )
    parsed = parse_traceback(text)
    assert parsed is not None
    assert (parsed.error.error_type, parsed.error.line, parsed.error.source_line) == (
        "ZeroDivisionError",
        4,
        "print(10 / n)",
    )


def test_pasted_without_indentation() -> None:
    text = (
        "Traceback (most recent call last):\n"
        'File "main.py", line 6, in <module>\n'
        "print(second_largest([7]))\n"
        'File "main.py", line 3, in second_largest\n'
        "return ordered[-2]\n"
        "IndexError: list index out of range\n"
    )
    parsed = parse_traceback(text)
    assert parsed is not None
    assert (parsed.error.line, parsed.error.function, parsed.error.source_line) == (
        3,
        "second_largest",
        "return ordered[-2]",
    )


def test_pasted_indented_as_a_markdown_block() -> None:
    text = "\n".join(
        "    " + line
        for line in (
            "Traceback (most recent call last):",
            '  File "/home/ana/word.py", line 4, in <module>',
            "    print(word[i])",
            "          ~~~~^^^",
            "IndexError: string index out of range",
        )
    )
    parsed = parse_traceback(text, 'word = "python"\ni = 0\nwhile i <= 6:\n    print(word[i])\n')
    assert parsed is not None
    # Carets under `word[i]`, in the file where the line is indented by 4.
    assert (parsed.error.line, parsed.error.column, parsed.error.end_column) == (4, 11, 17)


def test_columns_are_in_the_file_only_when_the_code_is_known() -> None:
    text = (
        "Traceback (most recent call last):\n"
        '  File "/tmp/main.py", line 3, in average\n'
        "    return total / len(numbers)\n"
        "           ~~~~~~^~~~~~~~~~~~~~\n"
        "ZeroDivisionError: division by zero\n"
    )
    code = "def average(numbers):\n    total = sum(numbers)\n    return total / len(numbers)\n"
    shown = parse_traceback(text)
    in_file = parse_traceback(text, code)
    assert shown is not None and in_file is not None
    assert (shown.error.column, shown.error.end_column) == (8, 27)
    assert (in_file.error.column, in_file.error.end_column) == (12, 31)
    assert code.splitlines()[2][11:31] == "total / len(numbers)"


def test_student_file_chosen_by_matching_the_code() -> None:
    """Two files of the student's: the one whose lines match the code is the one meant."""
    text = (
        "Traceback (most recent call last):\n"
        '  File "/home/ana/game/main.py", line 3, in <module>\n'
        "    score = helpers.add_points(score)\n"
        '  File "/home/ana/game/helpers.py", line 2, in add_points\n'
        '    return score + "10"\n'
        "TypeError: unsupported operand type(s) for +: 'int' and 'str'\n"
    )
    helpers = 'def add_points(score):\n    return score + "10"\n'
    main = "import helpers\nscore = 0\nscore = helpers.add_points(score)\n"
    for code, file, line in (
        (helpers, "/home/ana/game/helpers.py", 2),
        (main, "/home/ana/game/main.py", 3),
        ("", "/home/ana/game/main.py", 3),  # without code: the script Python started
    ):
        parsed = parse_traceback(text, code)
        assert parsed is not None
        assert (parsed.student_file, parsed.error.line) == (file, line)


def test_library_files() -> None:
    for path in (
        "/usr/lib/python3.11/json/decoder.py",
        "/usr/local/lib/python3.12/random.py",
        "/home/ana/.venv/lib/python3.11/site-packages/requests/api.py",
        "/usr/lib/python3/dist-packages/yaml/__init__.py",
        "<frozen runpy>",
        "<frozen importlib._bootstrap>",
        r"C:\Users\ana\AppData\Local\Programs\Python\Python311\Lib\json\decoder.py",
        r"C:\Python38\lib\csv.py",
        "/opt/homebrew/Cellar/python@3.11/3.11.4/Frameworks/Python.framework/Versions/3.11/lib/python3.11/json/decoder.py",
        "/home/ana/.pyenv/versions/3.10.4/lib/python3.10/statistics.py",
    ):
        assert is_library_file(path), path
    for path in (
        "main.py",
        "/tmp/main.py",
        "<string>",
        "<stdin>",
        "<python-input-0>",
        r"C:\Users\ana\Documents\homework\main.py",
        "/home/ana/projects/library/books.py",
    ):
        assert not is_library_file(path), path


def test_short_type() -> None:
    assert short_type("json.decoder.JSONDecodeError") == "JSONDecodeError"
    assert short_type("KeyError") == "KeyError"


def test_syntax_message_keeps_its_own_did_you_mean() -> None:
    text = (
        '  File "main.py", line 2\n    print "hi"\n    ^^^^^^^^^^\n'
        "SyntaxError: Missing parentheses in call to 'print'. Did you mean print(...)?\n"
    )
    parsed = parse_traceback(text)
    assert parsed is not None
    assert parsed.error.message.endswith("Did you mean print(...)?")
    assert parsed.error.notes == ()
    assert parsed.error.is_syntax


def test_suggestion_and_import_hint_together() -> None:
    text = (
        "Traceback (most recent call last):\n"
        '  File "main.py", line 1, in <module>\n'
        "    print(sys.argv)\n"
        "NameError: name 'sys' is not defined. Did you mean: 'say'? "
        "Or did you forget to import 'sys'?\n"
    )
    parsed = parse_traceback(text)
    assert parsed is not None
    error = parsed.error
    assert (error.message, error.suggestion, error.missing_import) == (
        "name 'sys' is not defined",
        "say",
        "sys",
    )


def test_three_exceptions_in_a_chain() -> None:
    block = (
        "Traceback (most recent call last):\n"
        '  File "main.py", line {line}, in <module>\n'
        "    {source}\n"
        "{error}\n"
    )
    text = (
        block.format(line=2, source="x = int(text)", error="ValueError: bad")
        + "\nDuring handling of the above exception, another exception occurred:\n\n"
        + block.format(line=4, source="y = data['k']", error="KeyError: 'k'")
        + "\nThe above exception was the direct cause of the following exception:\n\n"
        + block.format(line=6, source="raise RuntimeError('stop')", error="RuntimeError: stop")
    )
    parsed = parse_traceback(text)
    assert parsed is not None
    assert [(e.error_type, e.line) for e in parsed.errors] == [
        ("ValueError", 2),
        ("KeyError", 4),
        ("RuntimeError", 6),
    ]


def _run(sandbox_run: Runs, code: str) -> ParsedTraceback:
    run = sandbox_run(code)
    parsed = parse_traceback(run.stderr, code)
    assert parsed is not None, run.stderr
    return parsed


def test_real_exception_group(sandbox_run: Runs) -> None:
    code = (
        "def run_all(values):\n"
        "    errors = []\n"
        "    for value in values:\n"
        "        try:\n"
        "            print(10 / value)\n"
        "        except (ZeroDivisionError, TypeError) as error:\n"
        "            errors.append(error)\n"
        '    raise ExceptionGroup("some tasks failed", errors)\n'
        "\n"
        'run_all([1, 0, "x"])\n'
    )
    parsed = _run(sandbox_run, code)
    assert (parsed.error.error_type, parsed.error.line, parsed.error.function) == (
        "ExceptionGroup",
        8,
        "run_all",
    )
    assert [(e.error_type, e.line) for e in parsed.error.sub_errors] == [
        ("ZeroDivisionError", 5),
        ("TypeError", 5),
    ]


def test_real_nested_exception_group(sandbox_run: Runs) -> None:
    code = (
        "inner = ExceptionGroup('inner', [KeyError('k'), IndexError(1)])\n"
        "raise ExceptionGroup('outer', [ValueError('v'), inner])\n"
    )
    parsed = _run(sandbox_run, code)
    assert (parsed.error.error_type, parsed.error.line) == ("ExceptionGroup", 2)
    assert [e.error_type for e in parsed.error.sub_errors] == ["ValueError", "ExceptionGroup"]
    assert [e.error_type for e in parsed.error.sub_errors[1].sub_errors] == [
        "KeyError",
        "IndexError",
    ]


def test_real_notes(sandbox_run: Runs) -> None:
    code = (
        "def check(score):\n"
        "    if score > 100:\n"
        '        error = ValueError(f"bad score: {score}")\n'
        '        error.add_note("scores must be between 0 and 100")\n'
        "        raise error\n"
        "\n"
        "check(105)\n"
    )
    parsed = _run(sandbox_run, code)
    assert (parsed.error.message, parsed.error.notes, parsed.error.line) == (
        "bad score: 105",
        ("scores must be between 0 and 100",),
        5,
    )


def test_real_error_inside_an_imported_standard_module(sandbox_run: Runs) -> None:
    code = "import statistics\n\nmarks = []\nprint(statistics.mean(marks))\n"
    parsed = _run(sandbox_run, code)
    error = parsed.error
    assert (error.error_type, error.line, error.filename) == (
        "statistics.StatisticsError",
        4,
        "/tmp/main.py",
    )
    assert error.raised_in_library
    assert any(is_library_file(frame.filename) for frame in error.frames)


def test_real_user_defined_exception(sandbox_run: Runs) -> None:
    code = "class Oops(Exception):\n    pass\n\n\ndef go():\n    raise Oops('custom')\n\n\ngo()\n"
    parsed = _run(sandbox_run, code)
    assert (parsed.error.error_type, parsed.error.message, parsed.error.line) == (
        "Oops",
        "custom",
        6,
    )


def test_a_traceback_cut_at_the_start_still_gives_the_last_error() -> None:
    """Output limits can keep only the end of stderr: the final error is what matters."""
    full = (TRACEBACKS / "3.13" / "chain_with_carets.txt").read_text()
    cut = full[full.index("of the following exception:") + 10 :]
    for text in (cut, full[40:]):
        parsed = parse_traceback(text)
        assert parsed is not None
        assert (parsed.error.error_type, parsed.error.line) == ("ValueError", 8)


def test_a_traceback_cut_before_its_error_line_is_not_guessed() -> None:
    text = 'Traceback (most recent call last):\n  File "main.py", line 3, in <module>\n    x = f(\n'
    assert parse_traceback(text) is None


@pytest.mark.parametrize("digits", [30, 5000])
def test_absurd_numbers_in_a_pasted_traceback_are_unknown_not_a_crash(digits: int) -> None:
    """A line number no file has (30 digits overflowed the int32 SourceSpan: INTERNAL;
    5,000 digits are more than int() converts), and absurd repeat and elision counts.
    Found by tests/integration/test_robustness.py."""
    huge = "9" * digits
    text = (
        "Traceback (most recent call last):\n"
        f'  File "main.py", line {huge}, in <module>\n'
        "    f()\n"
        '  File "main.py", line 2, in f\n'
        "    return f()\n"
        "    ...<" + huge + " lines>...\n"
        "           ^^^\n"
        f"  [Previous line repeated {huge} more times]\n"
        f'  File "main.py", line {huge}, in g\n'
        "    x()\n"
        "RecursionError: maximum recursion depth exceeded\n"
    )
    parsed = parse_traceback(text, code="def f():\n    return f()\nf()\n")
    assert parsed is not None
    assert parsed.error.error_type == "RecursionError"
    assert parsed.error.line is None  # the innermost frame's line cannot be real
    numbers = [parsed.error.column, parsed.error.end_line, parsed.error.end_column]
    assert all(n is None or 0 <= n < 2**31 for n in numbers)
