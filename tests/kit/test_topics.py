"""The domain's curriculum enums agree with the contract and the curriculum."""

from __future__ import annotations

from learnflow.common.v1 import common_pb2

from services.kit.curriculum import CURRICULUM
from services.kit.topics import Band, Level, Topic, percent


def test_topics_match_the_proto_and_the_curriculum() -> None:
    proto = {v: n.removeprefix("TOPIC_") for n, v in common_pb2.Topic.items() if v}
    assert {t.value: t.name for t in Topic} == proto
    assert {(e.topic, e.slug) for e in CURRICULUM} == {(t.value, t.slug) for t in Topic}
    assert Topic.from_slug("errors-and-exceptions") is Topic.ERRORS_AND_EXCEPTIONS


def test_levels_match_the_proto() -> None:
    proto = {v: n.removeprefix("LEVEL_") for n, v in common_pb2.Level.items() if v}
    assert {level.value: level.name for level in Level} == proto
    assert Level.ADVANCED.label == "advanced"


def test_bands_match_the_proto_and_percent_rounds_half_up() -> None:
    proto: dict[int, str] = {
        v: n.removeprefix("MASTERY_BAND_") for n, v in common_pb2.MasteryBand.items()
    }
    assert {band.value: band.name for band in Band} == {**proto, 0: "NONE"}
    assert (percent(0.405), percent(0.404999), percent(1.0)) == (41, 40, 100)
    assert (Band.NONE.label, Band.RED.label, Topic.ERRORS_AND_EXCEPTIONS.label) == (
        "no band",
        "red",
        "errors and exceptions",
    )
