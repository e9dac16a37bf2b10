"""Diagrams go through Mermaid's own parser (Node): every curated diagram parses,
broken ones are refused, and a validator that cannot answer says so distinctly."""

from __future__ import annotations

import os
import shutil
import signal
import threading
from pathlib import Path

import pytest

from services.concepts.domain.content import Diagram, Library
from services.concepts.domain.explain import DiagramCheck, checked_diagram, diagram_problem
from services.concepts.mermaid_validator import SCRIPT, MermaidValidator

INVALID = [
    "graph TD; A-->",
    "flowchart LR\n A[unclosed",
    "classDiagram\n A <|-- ",
    "sequenceDiagram\n A->>: nobody",
    "this is not a diagram",
]


def test_every_curated_diagram_parses(library: Library, validator: MermaidValidator) -> None:
    diagrams = library.diagrams()
    assert len(diagrams) >= 20
    refused = {}
    for where, diagram in diagrams:
        check = validator(diagram.mermaid)
        if not check.valid:
            refused[where] = check.reason
    assert refused == {}
    assert validator.mermaid_version == "11.17.2"


@pytest.mark.parametrize("text", INVALID)
def test_invalid_diagrams_are_rejected(validator: MermaidValidator, text: str) -> None:
    check = validator(text)
    assert not check.valid and not check.unavailable
    assert check.reason  # the parser's own message


def test_the_parser_message_points_at_the_problem(validator: MermaidValidator) -> None:
    check = validator("graph TD; A-->")
    assert "Parse error on line" in check.reason and "got 'EOF'" in check.reason
    assert validator("flowchart TD\n  A --> B").valid


def test_concurrent_calls_get_their_own_answers(validator: MermaidValidator) -> None:
    texts = ["flowchart TD\n  A --> B", "graph TD; A-->"] * 10
    results: dict[int, DiagramCheck] = {}

    def check(index: int) -> None:
        results[index] = validator(texts[index])

    threads = [threading.Thread(target=check, args=(i,)) for i in range(len(texts))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [results[i].valid for i in range(len(texts))] == [True, False] * 10


def test_a_dead_validator_is_restarted() -> None:
    checker = MermaidValidator(call_timeout=20.0)
    try:
        assert checker("flowchart TD\n  A --> B").valid
        first = checker.pid
        assert first is not None
        os.kill(first, signal.SIGKILL)
        assert checker("flowchart TD\n  A --> B").valid
        assert checker.pid not in (None, first) and checker.starts == 2
    finally:
        checker.close()
    assert checker.pid is None


def test_missing_node_is_reported_as_unavailable(tmp_path: Path) -> None:
    checker = MermaidValidator(node=str(tmp_path / "no-node"))
    check = checker("flowchart TD\n  A --> B")
    assert not check.valid and check.unavailable
    assert "could not start node" in check.reason
    # The failed start is remembered: the next call does not try again at once.
    assert checker("flowchart TD\n  A --> B") == check
    assert checker.starts == 0


def test_missing_packages_are_reported_as_unavailable(tmp_path: Path) -> None:
    script = tmp_path / "validate.mjs"
    shutil.copy(SCRIPT, script)
    check = MermaidValidator(script=script)("flowchart TD\n  A --> B")
    assert check.unavailable and "mermaid is not installed: run npm ci" in check.reason


def _fake_package(tmp_path: Path, body: str) -> Path:
    (tmp_path / "node_modules" / "mermaid").mkdir(parents=True)
    script = tmp_path / "validate.mjs"
    script.write_text(body)
    return script


def test_a_hung_validator_times_out_and_is_replaced(tmp_path: Path) -> None:
    # A real Node process that says it is ready and then never answers.
    script = _fake_package(
        tmp_path,
        'process.stdout.write(JSON.stringify({ready: true, mermaid: "hung"}) + "\\n");\n'
        'process.stdin.on("data", () => {});\n',
    )
    checker = MermaidValidator(script=script, call_timeout=0.5)
    try:
        check = checker("flowchart TD\n  A --> B")
        assert check.unavailable and "did not answer within 0.5s" in check.reason
        assert checker.pid is None  # killed, so the next call starts afresh
        assert checker("flowchart TD\n  A --> B").unavailable
        assert checker.starts == 2
    finally:
        checker.close()


def test_a_validator_that_crashes_on_start_is_unavailable(tmp_path: Path) -> None:
    script = _fake_package(tmp_path, 'console.error("boom: no DOM"); process.exit(1);\n')
    check = MermaidValidator(script=script)("flowchart TD\n  A --> B")
    assert check.unavailable and "exited while starting" in check.reason
    assert "boom: no DOM" in check.reason


def test_checked_diagram_drops_invalid_and_unvalidated_diagrams(
    validator: MermaidValidator, caplog: pytest.LogCaptureFixture
) -> None:
    good = Diagram("flowchart TD\n  A --> B\n", "ok")
    assert checked_diagram(validator, good, "test") == good
    with caplog.at_level("WARNING", logger="learnflow.concepts"):
        assert checked_diagram(validator, Diagram("graph TD; A-->", "bad"), "t/bad") is None
        unavailable = MermaidValidator(node="/nonexistent/node")
        assert checked_diagram(unavailable, good, "t/down") is None
    messages = [r.getMessage() for r in caplog.records]
    assert any(m.startswith("diagram dropped (t/bad): Parse error") for m in messages)
    assert any("diagram dropped (t/down): validator unavailable" in m for m in messages)


def test_directives_and_click_handlers_are_refused_before_parsing() -> None:
    assert diagram_problem("%%{init: {'securityLevel': 'loose'}}%%\nflowchart TD\n A-->B")
    assert diagram_problem("flowchart TD\n  A --> B\n  click A callback")
    assert diagram_problem("flowchart TD\n" + "  A --> B\n" * 500)
    assert diagram_problem("flowchart TD\n  A --> B") is None
