"""How well and how fast the offline triage classifier classifies, against two baselines.

Sets (tests/triage/): the tuning set (labelled_requests.yaml: the original 139 plus two
earlier holdouts that were measured once and then tuned against) and the holdout
(holdout_requests.yaml: written after the last tuning, never tuned against; the number
to quote).

For each set: intent accuracy of the classifier and of two baselines side by side, with
the ratio; the classifier's per-intent precision/recall, confusion matrix, topic
accuracy and calibration (confidence bins against accuracy). Baselines:
  majority        always the most frequent intent of the tuning set
  first-keyword   the intent of the earliest keyword found in the request's text
                  (question, code and traceback, lower-cased), else concept
Latency: every request of both sets classified ROUNDS times in this process (warm),
per-call wall time; median and p99 in µs, for the classifier and first-keyword; plus
one request at the size limits (4 KiB question, 64 KiB code, 64 KiB traceback).

    .venv/bin/python bench/bench_triage.py [--rounds 50]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from services.triage.domain.classifier import Classification, Intent, classify
from tests.triage.labelled import HOLDOUT, LABELLED, Example, Report, evaluate, load

# The keywords a first attempt would use: one short list per intent.
KEYWORDS: dict[Intent, tuple[str, ...]] = {
    Intent.DEBUG: ("error", "traceback", "doesn't work", "not working", "bug", "wrong", "crash"),
    Intent.REVIEW: ("review", "feedback", "improve", "better", "clean", "pythonic"),
    Intent.EXERCISE: ("exercise", "quiz", "practice", "practise", "challenge"),
    Intent.PROGRESS: ("progress", "mastery", "streak", "how am i doing", "next"),
    Intent.CONCEPT: ("what", "how", "why", "explain", "difference"),
}


def first_keyword(question: str, code: str = "", traceback: str = "") -> Classification:
    text = f"{question}\n{code}\n{traceback}".lower()
    best: tuple[int, Intent] | None = None
    for intent, words in KEYWORDS.items():
        for word in words:
            at = text.find(word)
            if at >= 0 and (best is None or at < best[0]):
                best = (at, intent)
    intent = best[1] if best else Intent.CONCEPT
    return Classification(intent, 1.0, "first keyword", None, ())


def majority(examples: Sequence[Example]) -> Callable[[str, str, str], Classification]:
    counts = Counter(e.intent for e in examples)
    top = max(Intent, key=lambda i: (counts[i], -i.value))

    def predict(question: str, code: str = "", traceback: str = "") -> Classification:
        return Classification(top, 1.0, "majority", None, ())

    return predict


def _latencies_us(
    function: Callable[[str, str, str], Classification],
    requests: Sequence[tuple[str, str, str]],
    rounds: int,
) -> list[float]:
    samples = []
    for _ in range(rounds):
        for question, code, traceback in requests:
            start = time.perf_counter_ns()
            function(question, code, traceback)
            samples.append((time.perf_counter_ns() - start) / 1000)
    return samples


def _p(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _section(
    name: str, examples: list[Example], baseline_majority: Callable[..., Classification]
) -> None:
    ours = evaluate(examples, classify)
    keyword = evaluate(examples, first_keyword)
    always = evaluate(examples, baseline_majority)
    print(f"\n== {name}: {len(examples)} requests ==")
    print(f"  {'':16s} {'accuracy':>9s} {'classifier / this':>18s}")
    for label, report in (("classifier", ours), ("first-keyword", keyword), ("majority", always)):
        ratio = ours.accuracy / report.accuracy if report.accuracy else float("inf")
        print(f"  {label:16s} {report.accuracy:9.3f} {ratio:17.2f}x")
    print(
        f"  topic accuracy (classifier): {ours.topic_accuracy:.3f} "
        f"({ours.topic_correct}/{ours.topic_total} labelled with a topic)"
    )
    _details(ours)


def _details(report: Report) -> None:
    print("per intent:")
    print("\n".join(report.per_intent()))
    print("confusion:")
    print("\n".join(report.confusion_matrix()))
    print("calibration (confidence bins):")
    print("\n".join(report.calibration()))
    if report.misses:
        print("misses:")
        print("\n".join(report.miss_lines()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=50)
    parser.add_argument("--quick", action="store_true", help="10 latency rounds")
    args = parser.parse_args()
    if args.quick:
        args.rounds = 10

    tuning = load(LABELLED)
    holdout = load(HOLDOUT)
    always = majority(tuning)
    _section("holdout (never tuned against)", holdout, always)
    _section("tuning set", tuning, always)

    requests = [(e.question, e.code, e.traceback) for e in tuning + holdout]
    print(f"\n== latency: {len(requests)} requests x {args.rounds} rounds, warm, one thread ==")
    for label, function in (("classifier", classify), ("first-keyword", first_keyword)):
        samples = _latencies_us(function, requests, args.rounds)
        print(
            f"  {label:16s} median {statistics.median(samples):8.1f} µs   "
            f"p99 {_p(samples, 0.99):8.1f} µs"
        )
    big = (
        "why does this not work " * 170,
        "x = [i for i in range(10)]\nprint(x)\n" * 1700,
        ('  File "a.py", line 1, in <module>\n    f()\n' * 1400) + "KeyError: 'a'\n",
    )
    samples = _latencies_us(classify, [big], max(5, args.rounds // 5))
    sizes = "/".join(f"{len(part) // 1024}" for part in big)
    print(
        f"  {'at size limits':16s} median {statistics.median(samples):8.1f} µs   "
        f"p99 {_p(samples, 0.99):8.1f} µs   (question/code/traceback KiB {sizes})"
    )


if __name__ == "__main__":
    main()
