"""The curated content: complete (13 topics x 3 levels), each level the promised shape,
no stored outputs, and every example really runs in the sandbox."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from learnflow.common.v1 import common_pb2

from services.concepts.domain.content import (
    CONTENT_DIR,
    JARGON,
    SHAPES,
    ContentError,
    Level,
    Library,
    Topic,
    jargon_in,
    load_library,
    word_count,
)
from services.concepts.domain.proof import ExampleProver, Execute
from services.kit.curriculum import CURRICULUM


def test_enums_match_the_contract() -> None:
    for topic in Topic:
        assert common_pb2.Topic.Value(f"TOPIC_{topic.name}") == int(topic)
    for level in Level:
        assert common_pb2.Level.Value(f"LEVEL_{level.name}") == int(level)
    assert {t.slug for t in Topic} == {entry.slug for entry in CURRICULUM}


def test_every_topic_has_every_level(library: Library) -> None:
    assert set(library.topics) == set(Topic)
    for content in library.topics.values():
        assert set(content.levels) == set(Level)
        assert len(content.keywords) >= 3
        assert len(content.questions) >= 2, content.topic.slug


@pytest.mark.parametrize("topic", list(Topic), ids=lambda t: t.slug)
def test_each_level_has_its_shape(library: Library, topic: Topic) -> None:
    levels = library.topics[topic].levels
    beginner = levels[Level.BEGINNER]
    assert len(beginner.examples) == 1
    assert beginner.pitfalls == ()
    assert len(beginner.examples[0].code.strip().splitlines()) <= 12
    assert jargon_in(beginner.body) == []
    intermediate = levels[Level.INTERMEDIATE]
    assert 2 <= len(intermediate.examples) <= 3
    assert len(intermediate.pitfalls) >= 2
    advanced = levels[Level.ADVANCED]
    assert 2 <= len(advanced.examples) <= 4
    assert len(advanced.pitfalls) >= 3
    for item in levels.values():
        assert 80 <= word_count(item.body) <= 250, (topic.slug, item.level)
        assert item.title and all(e.caption for e in item.examples)
    assert library.topics[topic].diagram_near(Level.INTERMEDIATE) is not None


def test_no_example_output_is_stored_by_hand() -> None:
    for path in CONTENT_DIR.glob("*.yaml"):
        assert "output:" not in path.read_text(), path.name


def test_the_classic_confusions_are_covered(library: Library) -> None:
    ids = {q.question_id for q in library.questions()}
    assert {
        "loop-last-item-twice",
        "assign-vs-compare",
        "mutable-default-argument",
        "modify-list-while-iterating",
        "integer-division",
        "range-off-by-one",
        "string-immutable",
        "keyerror-vs-get",
    } <= ids
    assert len(ids) >= 30


# -- the loader refuses what breaks the rules -----------------------------------------


def _copy_content(tmp_path: Path) -> Path:
    root = tmp_path / "content"
    shutil.copytree(CONTENT_DIR, root)
    return root


def _edit(root: Path, slug: str, old: str, new: str) -> None:
    path = root / f"{slug}.yaml"
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))


def _problems(root: Path) -> str:
    with pytest.raises(ContentError) as caught:
        load_library(root)
    return "\n".join(caught.value.problems)


def test_a_stored_output_is_refused(tmp_path: Path) -> None:
    root = _copy_content(tmp_path)
    _edit(
        root,
        "recursion",
        "              countdown(n - 1)\n",
        "              countdown(n - 1)\n        output: |\n          3\n",
    )
    assert "stores an output: outputs come only from running the code" in _problems(root)


def test_a_second_beginner_example_is_refused(tmp_path: Path) -> None:
    root = _copy_content(tmp_path)
    _edit(
        root,
        "recursion",
        "    examples:\n      - caption: Counting down",
        "    examples:\n      - caption: extra\n        code: print(1)\n"
        "      - caption: Counting down",
    )
    assert "recursion.yaml.beginner: beginner needs 1-1 examples, has 2" in _problems(root)


def test_jargon_in_a_beginner_body_is_refused(tmp_path: Path) -> None:
    root = _copy_content(tmp_path)
    _edit(root, "strings", "A **string** is text", "A **string** is an immutable text")
    assert "beginner body uses jargon 'immutable'" in _problems(root)
    assert "immutable" in JARGON


def test_broken_code_and_missing_pieces_are_refused(tmp_path: Path) -> None:
    root = _copy_content(tmp_path)
    _edit(
        root, "functions", "          def area(width, height):", "          def area(width, height)"
    )
    (root / "testing.yaml").unlink()
    problems = _problems(root)
    assert "functions.yaml.beginner.examples.0: code does not compile" in problems
    assert "no content for testing" in problems


def test_pitfalls_are_required_above_beginner(tmp_path: Path) -> None:
    root = _copy_content(tmp_path)
    path = root / "modules.yaml"
    text = path.read_text()
    start = text.index("    pitfalls:\n", text.index("  intermediate:"))
    end = text.index("\n\n", start)
    path.write_text(text[:start] + "    pitfalls: []" + text[end:])
    assert "modules.yaml.intermediate: intermediate needs 2-5 pitfalls, has 0" in _problems(root)


# -- every curated example runs ------------------------------------------------------


def test_every_curated_example_runs_in_the_real_sandbox(library: Library, execute: Execute) -> None:
    prover = ExampleProver(execute)
    examples = library.examples()
    proven, rejected = prover.prove(examples)
    assert rejected == [], [(r.caption, r.reason) for r in rejected]
    assert len(proven) == len(examples)
    assert prover.runs == len({e.code for e in examples})  # the same code runs once
    for example in proven:
        assert example.output.strip(), example.caption  # each shows something
    # The output shown is the output of a real run: run a few again and compare.
    for example in proven[:: max(1, len(proven) // 8)]:
        assert execute(example.code).stdout == example.output


def test_shapes_table_matches_the_levels() -> None:
    assert SHAPES[Level.BEGINNER].max_examples == 1
    assert SHAPES[Level.BEGINNER].max_pitfalls == 0
    assert SHAPES[Level.ADVANCED].min_pitfalls >= SHAPES[Level.INTERMEDIATE].min_pitfalls
