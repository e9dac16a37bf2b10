"""Findings from the real ruff binary and radon on code with known problems."""

from __future__ import annotations

import ast
import threading

import pytest
from radon.metrics import mi_visit

from services.review.domain import rules
from services.review.domain.linter import LinterError, RuffLinter
from services.review.domain.metrics import measure, parse_tree, syntax_problem
from services.review.domain.model import Category, Severity
from services.review.domain.review import review_code
from tests.review.samples import BAD, CLEAN, blocks


def by_rule(code: str, linter: RuffLinter) -> dict[str, list[int]]:
    found: dict[str, list[int]] = {}
    for finding in review_code(code, linter).findings:
        found.setdefault(finding.rule, []).append(finding.span.line)
    return found


def test_known_bad_code_gets_each_expected_rule_on_its_line(linter: RuffLinter) -> None:
    found = by_rule(BAD, linter)
    assert found == {
        "F401": [2],  # unused import json
        "N802": [5],  # def Average
        "E225": [6],  # total=0
        "E722": [11],  # bare except
        "F841": [13],  # unused = 42
        "C901": [17],  # classify: cyclomatic complexity 12 (radon)
        "PLR1702": [18],  # six nested blocks
        "E711": [39],  # == None
        "F821": [40],  # undefined_name
    }


def test_findings_carry_category_severity_message_and_span(linter: RuffLinter) -> None:
    findings = {f.rule: f for f in review_code(BAD, linter).findings}
    expected = {
        "F401": (Category.CORRECTNESS, Severity.WARNING),
        "N802": (Category.READABILITY, Severity.WARNING),
        "E225": (Category.STYLE, Severity.INFO),
        "E722": (Category.CORRECTNESS, Severity.WARNING),
        "C901": (Category.COMPLEXITY, Severity.WARNING),
        "PLR1702": (Category.COMPLEXITY, Severity.WARNING),
        "E711": (Category.READABILITY, Severity.INFO),
        "F821": (Category.CORRECTNESS, Severity.ERROR),
    }
    for rule, (category, severity) in expected.items():
        assert (findings[rule].category, findings[rule].severity) == (category, severity), rule
    undefined = findings["F821"]
    assert "undefined_name" in undefined.message
    # print(undefined_name) on line 40: columns 11..24, end inclusive.
    assert (undefined.span.column, undefined.span.end_line, undefined.span.end_column) == (
        11,
        40,
        24,
    )
    complex_one = findings["C901"]
    assert "`classify`" in complex_one.message and "12" in complex_one.message
    assert (complex_one.span.line, complex_one.span.end_line) == (17, 35)


def test_pep8_layout_rules_need_ruff_preview_and_are_found(linter: RuffLinter) -> None:
    code = "def f(a,b):\n    return a+b\nx = f(1, 2)  #no space\n"
    found = by_rule(code, linter)
    assert found["E231"] == [1]  # missing whitespace after ','
    assert found["E226"] == [2]  # a+b
    assert found["E262"] == [3]  # inline comment should start with '# '
    assert found["E305"] == [3]  # two blank lines after a function


def test_clean_code_has_no_findings(linter: RuffLinter) -> None:
    assert by_rule(CLEAN, linter) == {}


def test_pasting_artefacts_are_not_findings(linter: RuffLinter) -> None:
    # No newline at the end, blank lines at the end, Windows line endings.
    assert by_rule("x = 1", linter) == {}
    assert by_rule("x = 1\n\n\n", linter) == {}
    assert by_rule("x = 1\r\ny = 2\r\n", linter) == {}


def test_noqa_comments_do_not_hide_findings_or_buy_points(linter: RuffLinter) -> None:
    plain = review_code(BAD, linter)
    silenced = review_code(
        "# ruff: noqa\n" + BAD.replace("import json\n", "import json  # noqa\n"), linter
    )
    assert "F401" in {f.rule for f in silenced.findings}
    assert len(silenced.findings) == len(plain.findings)
    assert silenced.quality_score == plain.quality_score  # comments are not lines of code


def test_a_syntax_error_is_one_correctness_error_with_its_line(linter: RuffLinter) -> None:
    review = review_code("x = 1\ndef broken(:\n    pass\n", linter)
    assert not review.parses
    (finding,) = review.findings
    assert finding.rule == rules.SYNTAX_ERROR
    assert (finding.category, finding.severity) == (Category.CORRECTNESS, Severity.ERROR)
    assert finding.span.line == 2 and finding.message.startswith("SyntaxError")
    assert review.quality_score == 0 and review.suggestions == ()
    assert review.metrics.lines_of_code == 3
    assert "does not parse" in review.summary and "line 2" in review.summary


@pytest.mark.parametrize(
    "code",
    [
        "print('a')\n  print('b')\n",  # unexpected indent
        "if True:\nprint(1)\n",  # expected an indented block
        "x = (1,\n",  # never closed
        "x = 1\x00\n",  # a null byte
        "(" * 300 + ")" * 300,  # nested beyond the parser's limit
    ],
)
def test_unparseable_code_never_crashes_the_review(linter: RuffLinter, code: str) -> None:
    review = review_code(code, linter)
    assert not review.parses and review.findings[0].rule == "E999"
    assert review.quality_score == 0


def test_syntax_problem_reports_the_line_and_column() -> None:
    problem = syntax_problem("a = 1\nb = (2 +\n")
    assert problem is not None and problem.line == 2
    assert syntax_problem("a = 1\n") is None


def test_metrics_from_radon() -> None:
    metrics, findings = measure(BAD)
    assert metrics.lines_of_code == 34  # lines holding code
    assert metrics.max_cyclomatic_complexity == 12  # classify
    # Average: 1 + for + except = 3; classify 12; the mean is over the two functions.
    assert metrics.mean_cyclomatic_complexity == 7.5
    assert 0 < metrics.maintainability_index < 100
    assert [f.rule for f in findings] == ["C901"]


def test_maintainability_is_radons_mi_visit_from_one_parse() -> None:
    # measure() feeds radon's MI formula from its own single parse; it must agree with
    # radon's own mi_visit(code, multi=True).
    for code in (BAD, CLEAN, blocks(3), "x = 1\n", "# only a comment\n"):
        metrics, _ = measure(code)
        assert metrics.maintainability_index == round(mi_visit(code, True), 2)


def test_complexity_above_twenty_is_an_error_and_module_code_counts() -> None:
    branches = "".join(f"    if x == {i}:\n        y = {i}\n" for i in range(25))
    metrics, findings = measure(f"def big(x):\n    y = 0\n{branches}    return y\n")
    assert metrics.max_cyclomatic_complexity == 26
    assert [(f.rule, f.severity) for f in findings] == [("C901", Severity.ERROR)]

    top_level = "".join(f"if x == {i}:\n    y = {i}\n" for i in range(12))
    metrics, findings = measure(f"x = 3\ny = 0\n{top_level}")
    assert metrics.max_cyclomatic_complexity == 13
    assert "top-level code" in findings[0].message


def test_concurrent_reviews_are_independent(linter: RuffLinter) -> None:
    results: dict[int, list[str]] = {}

    def run(i: int) -> None:
        code = BAD if i % 2 else CLEAN
        results[i] = [f.rule for f in review_code(code, linter).findings]

    threads = [threading.Thread(target=run, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    bad = [f.rule for f in review_code(BAD, linter).findings]
    assert all(results[i] == (bad if i % 2 else []) for i in range(8))


def test_the_spurious_ast_error_of_concurrent_parses_is_retried(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # CPython 3.11 (cpython#106905): a parse in another thread can make this one fail
    # with a SystemError that says nothing about the code. Injected once here.
    real_parse = ast.parse
    calls = []

    def collide_once(source: str, filename: str = "<unknown>") -> ast.Module:
        calls.append(filename)
        if len(calls) == 1:
            raise SystemError("AST constructor recursion depth mismatch (before=21, after=15)")
        return real_parse(source, filename)

    monkeypatch.setattr(ast, "parse", collide_once)
    assert isinstance(parse_tree("x = 1\n"), ast.Module) and len(calls) == 2

    def other_error(source: str, filename: str = "<unknown>") -> ast.Module:
        raise SystemError("something else")

    monkeypatch.setattr(ast, "parse", other_error)
    with pytest.raises(SystemError, match="something else"):
        parse_tree("x = 1\n")


def test_a_linter_that_cannot_run_is_an_error() -> None:
    broken = RuffLinter(binary="/nonexistent/ruff")
    with pytest.raises(LinterError):
        broken.check("x = 1\n")
    with pytest.raises(LinterError):
        broken.check_installed()
