"""mastery.updated carries the bands before and after and the evidence behind each score
(notify's falling-behind rule needs both)."""

from __future__ import annotations

from learnflow.events.v1 import events_pb2

from services.kit.topics import Band
from services.mastery.domain.model import Components, Mastery, StudentMastery
from services.mastery.domain.records import Change
from services.mastery.publisher import encode_changes


def test_bands_before_and_evidence_counts_are_published() -> None:
    before = {
        0: Mastery(0, 0.6, Band.YELLOW, Components()),
        3: Mastery(3, 0.6, Band.YELLOW, Components()),
    }
    after = StudentMastery(
        overall=Mastery(0, 0.3, Band.RED, Components()),
        topics={
            3: Mastery(3, 0.3, Band.RED, Components()),
            4: Mastery(4, 0.2, Band.RED, Components()),
        },
    )
    (message,) = encode_changes(
        [Change("amy", "c1", "UTC", before, after, "ev-1", {0: 12, 3: 9, 4: 3})]
    )
    event = events_pb2.MasteryUpdated.FromString(message.payload)
    assert (event.previous_band, event.band, event.evidence_count) == (2, 1, 12)
    topics = {int(t.topic): t for t in event.topics}
    assert (topics[3].previous_band, topics[3].band, topics[3].evidence_count) == (2, 1, 9)
    assert (topics[4].previous_band, topics[4].band, topics[4].evidence_count) == (0, 1, 3)
