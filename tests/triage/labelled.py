"""The labelled request sets and the metrics over them (shared by the tests and the bench).

labelled_requests.yaml was written before the classifier and tuned against;
holdout_requests.yaml was written after tuning started and is never tuned against.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from services.triage.domain.classifier import Classification, Intent, Topic

HERE = Path(__file__).resolve().parent
LABELLED = HERE / "labelled_requests.yaml"
HOLDOUT = HERE / "holdout_requests.yaml"
FIELDS = frozenset({"id", "question", "code", "traceback", "intent", "topic"})


@dataclass(frozen=True)
class Example:
    id: str
    question: str
    code: str
    traceback: str
    intent: Intent
    topic: Topic | None


def load(path: Path) -> list[Example]:
    """Loads a set, checking every item's fields and labels."""
    items = yaml.safe_load(path.read_text(encoding="utf-8"))
    examples = []
    for item in items:
        unknown = set(item) - FIELDS
        assert not unknown, f"{item.get('id')}: unknown fields {sorted(unknown)}"
        examples.append(
            Example(
                id=str(item["id"]),
                question=str(item.get("question") or ""),
                code=str(item.get("code") or ""),
                traceback=str(item.get("traceback") or ""),
                intent=Intent[str(item["intent"]).upper()],
                topic=Topic.from_slug(item["topic"]) if item.get("topic") else None,
            )
        )
    ids = [e.id for e in examples]
    assert len(ids) == len(set(ids)), "duplicate ids"
    return examples


Classify = Callable[[str, str, str], Classification]


@dataclass(frozen=True)
class Miss:
    example: Example
    got: Classification


@dataclass
class Report:
    total: int = 0
    correct: int = 0
    topic_total: int = 0
    topic_correct: int = 0
    # confusion[(expected, got)] = count
    confusion: Counter[tuple[Intent, Intent]] = field(default_factory=Counter)
    misses: list[Miss] = field(default_factory=list)
    topic_misses: list[Miss] = field(default_factory=list)
    # (confidence, correct) per example, for calibration.
    confidences: list[tuple[float, bool]] = field(default_factory=list)

    @property
    def accuracy(self) -> float:
        return self.correct / self.total if self.total else 0.0

    @property
    def topic_accuracy(self) -> float:
        return self.topic_correct / self.topic_total if self.topic_total else 0.0

    def precision(self, intent: Intent) -> float:
        predicted = sum(n for (_, got), n in self.confusion.items() if got is intent)
        return self.confusion[(intent, intent)] / predicted if predicted else 0.0

    def recall(self, intent: Intent) -> float:
        actual = sum(n for (exp, _), n in self.confusion.items() if exp is intent)
        return self.confusion[(intent, intent)] / actual if actual else 0.0

    def support(self, intent: Intent) -> int:
        return sum(n for (exp, _), n in self.confusion.items() if exp is intent)

    def calibration(self, bins: Sequence[float] = (0.0, 0.5, 0.7, 0.9, 1.01)) -> list[str]:
        """Rows "[lo, hi): n, mean confidence, accuracy" and the expected calibration error."""
        rows = []
        ece = 0.0
        for lo, hi in itertools.pairwise(bins):
            inside = [(c, ok) for c, ok in self.confidences if lo <= c < hi]
            if not inside:
                continue
            mean_conf = sum(c for c, _ in inside) / len(inside)
            acc = sum(ok for _, ok in inside) / len(inside)
            ece += len(inside) / len(self.confidences) * abs(mean_conf - acc)
            rows.append(
                f"  [{lo:.2f}, {min(hi, 1.0):.2f}]  n={len(inside):3d}  "
                f"mean confidence {mean_conf:.2f}  accuracy {acc:.2f}"
            )
        rows.append(f"  expected calibration error {ece:.3f}")
        return rows

    def per_intent(self) -> list[str]:
        rows = [f"  {'intent':10s} {'precision':>9s} {'recall':>7s} {'n':>4s}"]
        for intent in Intent:
            rows.append(
                f"  {intent.name.lower():10s} {self.precision(intent):9.2f} "
                f"{self.recall(intent):7.2f} {self.support(intent):4d}"
            )
        return rows

    def confusion_matrix(self) -> list[str]:
        names = [i.name.lower()[:8] for i in Intent]
        rows = ["  expected \\ got " + " ".join(f"{n:>8s}" for n in names)]
        for exp in Intent:
            counts = " ".join(f"{self.confusion[(exp, got)]:8d}" for got in Intent)
            rows.append(f"  {exp.name.lower():15s} {counts}")
        return rows

    def miss_lines(self) -> list[str]:
        return [
            f"  {m.example.id}: expected {m.example.intent.name.lower()}, got "
            f"{m.got.intent.name.lower()} ({m.got.confidence:.2f}, {m.got.reason}) "
            f"<- {m.example.question[:60]!r}"
            for m in self.misses
        ]

    def topic_miss_lines(self) -> list[str]:
        return [
            f"  {m.example.id}: expected {m.example.topic.slug if m.example.topic else None}, "
            f"got {m.got.topic.slug if m.got.topic else None} <- {m.example.question[:60]!r}"
            for m in self.topic_misses
        ]

    def summary(self, name: str) -> str:
        lines = [
            f"{name}: intent accuracy {self.accuracy:.3f} ({self.correct}/{self.total}), "
            f"topic accuracy {self.topic_accuracy:.3f} ({self.topic_correct}/{self.topic_total})",
            *self.per_intent(),
            *self.confusion_matrix(),
        ]
        if self.misses:
            lines += ["intent misses:", *self.miss_lines()]
        return "\n".join(lines)


def evaluate(examples: Sequence[Example], classify: Classify) -> Report:
    report = Report()
    for example in examples:
        got = classify(example.question, example.code, example.traceback)
        ok = got.intent is example.intent
        report.total += 1
        report.correct += ok
        report.confusion[(example.intent, got.intent)] += 1
        report.confidences.append((got.confidence, ok))
        if not ok:
            report.misses.append(Miss(example, got))
        if example.topic is not None:
            report.topic_total += 1
            if got.topic is example.topic:
                report.topic_correct += 1
            else:
                report.topic_misses.append(Miss(example, got))
    return report
