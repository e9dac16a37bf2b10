"""The offline engine end to end: real sandbox runs, the real Mermaid parser, levels
from mastery, the specific answer to a classic question, failing examples dropped."""

from __future__ import annotations

import dataclasses

import pytest

from services.concepts.domain.content import Example, Level, Library, Topic
from services.concepts.domain.explain import DiagramCheck, Origin
from services.concepts.domain.proof import ExampleProver, Execute
from services.concepts.engine import ConceptsEngine, MasteryLevel, authorise
from services.concepts.mermaid_validator import MermaidValidator
from services.kit.auth import Principal, Role
from services.kit.errors import InvalidArgument, PermissionDenied

LAST_TWICE = "why does my for loop print the last item twice?"


def _no_mastery(student_id: str, topic: Topic) -> Level | None:
    return None


def _engine(
    library: Library,
    prover: ExampleProver,
    validator: MermaidValidator,
    mastery: MasteryLevel = _no_mastery,
) -> ConceptsEngine:
    return ConceptsEngine(library, prover, validator, mastery)


def test_the_last_item_twice_question_gets_its_specific_answer(
    library: Library, shared_prover: ExampleProver, validator: MermaidValidator
) -> None:
    engine = _engine(library, shared_prover, validator)
    answer = engine.explain(
        "ana", topic=None, question=LAST_TWICE, level=None, include_diagram=True
    )
    assert answer.topic is Topic.CONTROL_FLOW and answer.level is Level.BEGINNER
    assert answer.question_id == "loop-last-item-twice"
    assert answer.title == "Why does my for loop print the last item twice?"
    assert "keeps the last item" in answer.body and "indent" in answer.body
    assert answer.origin is Origin.CURATED
    (example,) = answer.examples  # beginner: exactly one
    assert "print(fruit)  # not indented" in example.code
    assert example.output == "apple\nbanana\ncherry\ncherry\n"  # really ran
    assert answer.pitfalls == ()
    assert answer.diagram is not None and "still cherry" in answer.diagram.mermaid

    deeper = engine.explain(
        "ana", topic=None, question=LAST_TWICE, level=Level.INTERMEDIATE, include_diagram=False
    )
    assert [e.output for e in deeper.examples][1].endswith("after the loop: 2\n")
    assert deeper.pitfalls and deeper.diagram is None


def test_the_level_comes_from_mastery_unless_asked(
    library: Library, shared_prover: ExampleProver, validator: MermaidValidator
) -> None:
    asked: list[tuple[str, Topic]] = []

    def mastery(student_id: str, topic: Topic) -> Level | None:
        asked.append((student_id, topic))
        return Level.ADVANCED if student_id == "expert" else None

    engine = _engine(library, shared_prover, validator, mastery)
    expert = engine.explain(
        "expert", topic=Topic.RECURSION, question="", level=None, include_diagram=False
    )
    assert expert.level is Level.ADVANCED
    assert expert.title == library.level(Topic.RECURSION, Level.ADVANCED).title
    assert asked == [("expert", Topic.RECURSION)]
    novice = engine.explain(
        "novice", topic=Topic.RECURSION, question="", level=None, include_diagram=False
    )
    assert novice.level is Level.BEGINNER  # unknown mastery: beginner
    asked.clear()
    chosen = engine.explain(
        "expert",
        topic=Topic.RECURSION,
        question="",
        level=Level.INTERMEDIATE,
        include_diagram=False,
    )
    assert chosen.level is Level.INTERMEDIATE and asked == []  # an explicit level wins


@pytest.mark.parametrize("level", list(Level), ids=lambda lv: lv.label)
def test_each_level_is_returned_in_its_shape_with_real_outputs(
    library: Library,
    shared_prover: ExampleProver,
    validator: MermaidValidator,
    execute: Execute,
    level: Level,
) -> None:
    engine = _engine(library, shared_prover, validator)
    answer = engine.explain(
        "ana", topic=Topic.FUNCTIONS, question="", level=level, include_diagram=True
    )
    curated = library.level(Topic.FUNCTIONS, level)
    assert (answer.title, answer.body) == (curated.title, curated.body)
    assert [e.code for e in answer.examples] == [e.code for e in curated.examples]
    assert len(answer.pitfalls) == len(curated.pitfalls)
    for example in answer.examples:
        assert example.output == execute(example.code).stdout
    assert answer.diagram is not None  # the level's own, or the nearest level's


def test_a_failing_curated_example_is_never_shown(
    library: Library,
    execute: Execute,
    validator: MermaidValidator,
    caplog: pytest.LogCaptureFixture,
) -> None:
    content = library.topics[Topic.STRINGS]
    level = content.levels[Level.ADVANCED]
    broken = dataclasses.replace(
        level,
        examples=(
            Example("print('kept')\n", "works"),
            Example("print('half')\n'a' + 1\n", "raises TypeError"),
        ),
    )
    levels = {**content.levels, Level.ADVANCED: broken}
    patched = Library(
        {**library.topics, Topic.STRINGS: dataclasses.replace(content, levels=levels)}
    )
    engine = _engine(patched, ExampleProver(execute), validator)
    with caplog.at_level("WARNING"):
        answer = engine.explain(
            "ana", topic=Topic.STRINGS, question="", level=Level.ADVANCED, include_diagram=False
        )
    assert [(e.caption, e.output) for e in answer.examples] == [("works", "kept\n")]
    assert any(
        "example dropped" in r.getMessage() and "TypeError" in r.getMessage()
        for r in caplog.records
    )


def test_without_a_validator_no_diagram_is_shown(
    library: Library, shared_prover: ExampleProver
) -> None:
    def unavailable(text: str) -> DiagramCheck:
        return DiagramCheck(False, "node is not installed", unavailable=True)

    engine = ConceptsEngine(library, shared_prover, unavailable, _no_mastery)
    answer = engine.explain(
        "ana", topic=Topic.RECURSION, question="", level=None, include_diagram=True
    )
    assert answer.diagram is None and answer.examples  # the rest is still answered


def test_a_question_about_no_known_topic_is_refused(
    library: Library, shared_prover: ExampleProver, validator: MermaidValidator
) -> None:
    engine = _engine(library, shared_prover, validator)
    with pytest.raises(InvalidArgument) as caught:
        engine.explain(
            "ana", topic=None, question="what's for lunch?", level=None, include_diagram=False
        )
    assert [v.field for v in caught.value.violations] == ["topic"]
    detected = engine.explain(
        "ana", topic=None, question="how do dictionaries work?", level=None, include_diagram=False
    )
    assert detected.topic is Topic.COLLECTIONS and detected.question_id == ""


def test_authorisation_rules() -> None:
    lookups: list[tuple[str, str]] = []

    def cohort_of(tenant: str, student_id: str) -> str | None:
        lookups.append((tenant, student_id))
        return {("dev", "ana"): "c-1", ("dev", "ben"): "c-2"}.get((tenant, student_id))

    authorise(Principal("ana", Role.STUDENT), "ana", cohort_of)
    with pytest.raises(PermissionDenied):
        authorise(Principal("ben", Role.STUDENT), "ana", cohort_of)
    assert lookups == []  # students are refused before any lookup
    authorise(Principal("root", Role.ADMIN), "ana", cohort_of)
    teacher = Principal("tess", Role.TEACHER, ("c-1",))
    authorise(teacher, "ana", cohort_of)
    for other in ("ben", "nobody"):
        with pytest.raises(PermissionDenied):
            authorise(teacher, other, cohort_of)
    assert lookups == [("dev", "ana"), ("dev", "ben"), ("dev", "nobody")]


def test_a_teacher_is_asked_about_in_their_own_tenant_only() -> None:
    """The same student id and the same cohort name in another school: that school's
    teacher of "c-1" is refused, because the lookup is in the teacher's tenant."""
    lookups: list[tuple[str, str]] = []

    def cohort_of(tenant: str, student_id: str) -> str | None:
        lookups.append((tenant, student_id))
        return {("school-a", "ana"): "c-1"}.get((tenant, student_id))

    authorise(Principal("tess", Role.TEACHER, ("c-1",), tenant="school-a"), "ana", cohort_of)
    with pytest.raises(PermissionDenied):
        authorise(Principal("tom", Role.TEACHER, ("c-1",), tenant="school-b"), "ana", cohort_of)
    assert lookups == [("school-a", "ana"), ("school-b", "ana")]
    # An operator acting in a tenant is tenant-wide there, with no lookup.
    operator = Principal("ops", Role.OPERATOR, tenant="platform").acting_in("school-a")
    authorise(operator, "ana", cohort_of)
    assert len(lookups) == 2
