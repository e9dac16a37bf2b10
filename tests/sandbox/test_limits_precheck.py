"""Unit tests of the sandbox's domain: limit resolution and the friendly pre-checks."""

from __future__ import annotations

import pytest

from services.sandbox.domain.limits import (
    GIB,
    KIB,
    MAXIMA,
    MIB,
    InvalidLimitsError,
    Limits,
    resolve,
)
from services.sandbox.domain.precheck import precheck

# --- limits ----------------------------------------------------------------------------


def test_defaults_are_the_documented_safe_values() -> None:
    assert Limits() == Limits(5.0, 5.0, 256 * MIB, 16, 64 * KIB, 1 * MIB, 8 * MIB)
    maxima = Limits(20.0, 20.0, 1 * GIB, 64, 1 * MIB, 16 * MIB, 64 * MIB)
    assert maxima == MAXIMA


def test_empty_request_gives_defaults() -> None:
    assert resolve({}) == Limits()


def test_zero_and_none_mean_default() -> None:
    assert resolve({"wall_time": 0, "cpu_time": None, "memory_bytes": 0}) == Limits()


def test_each_field_can_be_set_up_to_its_maximum() -> None:
    request = {
        "wall_time": 20,
        "cpu_time": 20.0,
        "memory_bytes": GIB,
        "max_processes": 64,
        "max_output_bytes": MIB,
        "max_file_bytes": 16 * MIB,
        "scratch_bytes": 64 * MIB,
    }
    assert resolve(request) == MAXIMA


def test_lower_values_are_kept_and_typed() -> None:
    got = resolve({"wall_time": 1.5, "max_processes": 4.0, "memory_bytes": 64 * MIB})
    assert got.wall_seconds == 1.5
    assert got.max_processes == 4 and isinstance(got.max_processes, int)
    assert got.memory_bytes == 64 * MIB
    assert got.cpu_seconds == Limits().cpu_seconds


def test_dataclass_names_are_accepted_too() -> None:
    assert resolve({"wall_seconds": 2}).wall_seconds == 2.0


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("wall_time", 20.5),
        ("cpu_time", 21),
        ("memory_bytes", GIB + 1),
        ("max_processes", 65),
        ("max_output_bytes", MIB + 1),
        ("max_file_bytes", 16 * MIB + 1),
        ("scratch_bytes", 64 * MIB + 1),
    ],
)
def test_above_maximum_names_the_proto_field(field: str, value: float) -> None:
    with pytest.raises(InvalidLimitsError) as caught:
        resolve({field: value})
    assert [name for name, _ in caught.value.violations] == [field]
    assert field in str(caught.value)
    assert "maximum" in str(caught.value)


def test_every_bad_field_is_listed_not_just_the_first() -> None:
    with pytest.raises(ValueError, match="wall_time") as caught:
        resolve({"wall_time": -1, "memory_bytes": 2 * GIB, "max_processes": 2.5, "cpu_time": 3})
    assert isinstance(caught.value, InvalidLimitsError)
    names = sorted(name for name, _ in caught.value.violations)
    assert names == ["max_processes", "memory_bytes", "wall_time"]
    why = dict(caught.value.violations)
    assert "negative" in why["wall_time"]
    assert "whole number" in why["max_processes"]


@pytest.mark.parametrize("value", [float("nan"), float("inf"), True])
def test_non_finite_and_boolean_values_are_rejected(value: float) -> None:
    with pytest.raises(InvalidLimitsError, match="cpu_time"):
        resolve({"cpu_time": value})


def test_unknown_limit_is_rejected() -> None:
    with pytest.raises(InvalidLimitsError, match="gpu_count"):
        resolve({"gpu_count": 1})


def test_smaller_server_maxima_lower_the_defaults() -> None:
    maxima = Limits(wall_seconds=2.0, memory_bytes=128 * MIB)
    got = resolve({}, maxima=maxima)
    assert got.wall_seconds == 2.0
    assert got.memory_bytes == 128 * MIB
    with pytest.raises(InvalidLimitsError, match="wall_time"):
        resolve({"wall_time": 3}, maxima=maxima)


# --- precheck: syntax -------------------------------------------------------------------


def test_valid_code_passes() -> None:
    assert precheck("x = 1\nprint(x)\n", None) is None


def test_unterminated_string() -> None:
    failure = precheck('name = "Ada\nprint(name)\n', None)
    assert failure is not None
    assert failure.kind == "syntax_error"
    assert "unterminated string literal" in failure.message
    assert (failure.line, failure.column) == (1, 8)
    assert failure.excerpt == 'name = "Ada\n       ^'


def test_missing_colon() -> None:
    failure = precheck("for i in range(3)\n    print(i)\n", None)
    assert failure is not None
    assert failure.kind == "syntax_error"
    assert failure.message == "SyntaxError: expected ':'"
    assert (failure.line, failure.column) == (1, 18)
    assert failure.excerpt.splitlines() == ["for i in range(3)", " " * 17 + "^"]


def test_unclosed_bracket_points_at_the_opening_bracket() -> None:
    failure = precheck("total = sum([1, 2, 3\nprint(total)\n", None)
    assert failure is not None
    assert "'[' was never closed" in failure.message
    assert (failure.line, failure.column) == (1, 13)
    assert failure.excerpt == "total = sum([1, 2, 3\n            ^"


def test_mismatched_closing_bracket() -> None:
    failure = precheck("x = 1\nvalues = [1, 2)\n", None)
    assert failure is not None
    assert "does not match opening parenthesis '['" in failure.message
    assert (failure.line, failure.column) == (2, 15)
    assert failure.excerpt == "values = [1, 2)\n              ^"


def test_indentation_error_is_a_syntax_error() -> None:
    failure = precheck("def f():\nreturn 1\n", None)
    assert failure is not None
    assert failure.kind == "syntax_error"
    assert failure.message.startswith("IndentationError: expected an indented block")
    assert failure.line == 2


def test_caret_keeps_tabs_aligned() -> None:
    failure = precheck("if True:\n\tx = (1,\n", None)
    assert failure is not None
    assert failure.excerpt == "\tx = (1,\n\t    ^"


def test_caret_spans_the_reported_range() -> None:
    failure = precheck("print 'hello'\n", None)
    assert failure is not None
    assert "Missing parentheses" in failure.message
    assert failure.excerpt.splitlines()[1].strip() == "^" * len("print 'hello'")


def test_null_byte() -> None:
    failure = precheck('x = "a\0"\n', None)
    assert failure is not None
    assert failure.kind == "syntax_error"
    assert "null bytes" in failure.message
    assert (failure.line, failure.column) == (1, 7)


# --- precheck: imports ------------------------------------------------------------------


def test_none_means_no_import_restriction() -> None:
    assert precheck("import socket\nimport ctypes\n", None) is None


def test_empty_sequence_means_no_imports_at_all() -> None:
    failure = precheck("x = 1\nimport math\n", [])
    assert failure is not None
    assert failure.kind == "disallowed_import"
    assert failure.module == "math"
    assert "does not allow any imports" in failure.message
    assert (failure.line, failure.column) == (2, 8)
    assert failure.excerpt == "import math\n       ^"


@pytest.mark.parametrize(
    ("code", "module", "line", "column"),
    [
        ("import os\n", "os", 1, 8),
        ("import math, os.path\n", "os.path", 1, 14),
        ("from subprocess import run\n", "subprocess", 1, 1),
        ("def f():\n    import socket\n", "socket", 2, 12),
        ("m = __import__('ctypes')\n", "ctypes", 1, 16),
        ("import builtins\nm = builtins.__import__('os')\n", "builtins", 1, 8),
        ("import importlib\nm = importlib.import_module('shutil')\n", "importlib", 1, 8),
        ("é = 'é'; import os\n", "os", 1, 17),
    ],
)
def test_disallowed_import_forms(code: str, module: str, line: int, column: int) -> None:
    failure = precheck(code, ["math", "random"])
    assert failure is not None
    assert failure.kind == "disallowed_import"
    assert failure.module == module
    assert (failure.line, failure.column) == (line, column)
    assert f"'{module}'" in failure.message
    assert "math, random" in failure.message
    caret_line = failure.excerpt.splitlines()[1]
    assert caret_line.index("^") == column - 1


def test_dynamic_imports_are_checked_when_importlib_is_allowed() -> None:
    code = "import importlib\nfrom importlib import import_module\nimport_module('os')\n"
    failure = precheck(code, ["importlib"])
    assert failure is not None
    assert (failure.module, failure.line, failure.column) == ("os", 3, 15)
    failure = precheck("importlib_mod = __import__('socket')\n", ["math"])
    assert failure is not None and failure.module == "socket"


def test_first_violation_in_source_order() -> None:
    failure = precheck("import math\nimport sys\nimport os\n", ["math"])
    assert failure is not None and failure.module == "sys"


@pytest.mark.parametrize(
    "code",
    [
        "import math\nimport random as r\nfrom math import sqrt\n",
        "import collections.abc\n",  # a submodule of an allowed package
        "from os import path\n",  # os.path is allowed: `from os import path` imports it
        "import os.path\n",
        "from __future__ import annotations\n",  # a compiler directive, always allowed
        "from . import helpers\n",  # relative: fails at run time on its own
        "name = 'os'\nm = __import__(name)\n",  # not a literal: not knowable statically
    ],
)
def test_allowed_imports_pass(code: str) -> None:
    assert precheck(code, ["math", "random", "collections", "os.path"]) is None


def test_allowed_names_do_not_match_prefixes_of_other_modules() -> None:
    failure = precheck("import mathematics\n", ["math"])
    assert failure is not None and failure.module == "mathematics"
    failure = precheck("import os\n", ["os.path"])
    assert failure is not None and failure.module == "os"
