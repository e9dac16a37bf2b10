"""Exercise and quiz generation with the scripted model: what LearnFlow adds around a
model call (the checks and the sandbox proof), and the share of drafts rejected.

The generator runs in this process with the sandbox's real isolation (the mode
`detect()` picks, as the exercise tests use) and the scripted OpenAI-compatible server
from the tests, which answers at once: the times are LearnFlow's own overhead, not a
provider's latency. Over gRPC each sandbox run also pays an ExecuteCode call.

Scenarios (each run --rounds times, one after another):
  accepted         a good draft: 4 reference runs, then starter runs until one fails
  reference_fails  a draft whose reference solution fails a test, then a good one
  starter_passes   a draft whose starter code already passes, then a good one
  schema           an answer that is not the schema, then a good one
  exhausted        three bad drafts (reference, starter, no hidden test): the bank
  quiz             5 questions: 2 predict-the-output (each snippet run twice, one with a
                   wrong claimed output), 1 erroring snippet, 2 multiple choice (one
                   with two correct options): 3 generated + 2 from the bank
Rows: median and max ms per call, model calls and sandbox runs per call. Then the
drafts rejected across the exercise scenarios, by reason.

    python bench/bench_generation.py [--rounds 10] [--quick]
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from services.exercise.domain.bank import Level, Topic, default_bank
from services.exercise.domain.generation import is_generated
from services.exercise.domain.grading import Execution
from services.exercise.engine import ExerciseEngine
from services.exercise.generator import ExerciseGenerator, GenerationStats, ModelAuthor
from services.kit.config import Settings
from services.kit.llm import LLM
from services.sandbox.domain.limits import Limits
from services.sandbox.isolation.base import detect
from tests.exercise.drafts import (
    CHOICE,
    ERRORING,
    GOOD,
    PREDICT_WRONG_CLAIM,
    REFERENCE_FAILS,
    STARTER_PASSES,
    TWO_CORRECT,
    DictStore,
    variant,
)
from tests.support.openai_server import Reply, ScriptedOpenAI, json_reply, start, text_reply

PREDICT_RIGHT = {
    "kind": "predict_output",
    "prompt": "What does this print?",
    "code": "words = ['b', 'a', 'c']\nprint(sorted(words), words)\n",
    "output": "['a', 'b', 'c'] ['b', 'a', 'c']",
    "explanation": "sorted returns a new list and leaves the original alone.",
}

SCENARIOS: dict[str, list[Reply]] = {
    "accepted": [json_reply(GOOD)],
    "reference_fails": [json_reply(REFERENCE_FAILS), json_reply(GOOD)],
    "starter_passes": [json_reply(STARTER_PASSES), json_reply(GOOD)],
    "schema": [text_reply("Here is an exercise about dictionaries!"), json_reply(GOOD)],
    "exhausted": [
        json_reply(REFERENCE_FAILS),
        json_reply(STARTER_PASSES),
        json_reply(variant(hidden_tests=[])),
    ],
}
QUIZ = [
    json_reply({"questions": [PREDICT_WRONG_CLAIM, ERRORING, CHOICE, TWO_CORRECT, PREDICT_RIGHT]})
]


class CountingSandbox:
    def __init__(self) -> None:
        self._isolation = detect()
        self._limits = Limits(wall_seconds=3.0, cpu_seconds=3.0, max_output_bytes=1 << 20)
        self.runs = 0

    def __call__(self, program: str, stdin: str) -> Execution:
        self.runs += 1
        result = self._isolation.run(program, stdin, self._limits)
        return Execution(
            stdout=result.stdout,
            stderr=result.stderr,
            exit_code=result.exit_code,
            timed_out=result.timed_out,
            memory_exceeded=result.memory_exceeded,
        )


def measure(
    name: str,
    rounds: int,
    script: ScriptedOpenAI,
    sandbox: CountingSandbox,
    replies: list[Reply],
    call: Callable[[], Any],
    check: Callable[[Any], bool],
) -> None:
    times: list[float] = []
    calls = runs = 0
    for _ in range(rounds):
        script.reset()
        script.enqueue(*replies)
        before = sandbox.runs
        started = time.perf_counter()
        result = call()
        times.append((time.perf_counter() - started) * 1000)
        if not check(result):
            raise SystemExit(f"{name}: unexpected result {result!r}")
        calls += len(script.requests)
        runs += sandbox.runs - before
    print(
        f"{name:<16} {statistics.median(times):8.1f} {max(times):8.1f} "
        f"{calls / rounds:7.1f} {runs / rounds:7.1f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--quick", action="store_true", help="3 rounds per scenario")
    args = parser.parse_args()
    rounds = 3 if args.quick else args.rounds
    logging.getLogger("learnflow").setLevel(logging.ERROR)  # rejections are expected here

    script = ScriptedOpenAI()
    server = start(script)
    settings = Settings(
        openai_api_key="sk-bench",
        openai_base_url=script.base_url,
        openai_model="bench",
        openai_max_retries=0,
        log_level="ERROR",
    )
    sandbox = CountingSandbox()
    stats = GenerationStats()
    engine = ExerciseEngine(
        default_bank(),
        sandbox,
        lambda student, topic: Level.BEGINNER,
        # The benchmark's synthetic students all consent to model use.
        generator=ExerciseGenerator(
            ModelAuthor(LLM(settings, model_use=lambda call: True)), sandbox, stats=stats
        ),
        generated=DictStore(),
    )

    def generate() -> Any:
        return engine.generate(
            "dev",
            "bench",
            cohort="",
            topic=Topic.COLLECTIONS,
            difficulty=None,
            focus_error="",
            passed=set,
        )

    print(f"isolation: {type(sandbox._isolation).__name__}, {rounds} rounds per row")
    print(f"{'scenario':<16} {'p50 ms':>8} {'max ms':>8} {'calls':>7} {'runs':>7}")

    def origin_is(generated: bool) -> Callable[[Any], bool]:
        return lambda exercise: is_generated(exercise.exercise_id) == generated

    for name, replies in SCENARIOS.items():
        measure(name, rounds, script, sandbox, replies, generate, origin_is(name != "exhausted"))
    measure(
        "quiz",
        rounds,
        script,
        sandbox,
        QUIZ,
        lambda: engine.new_quiz("bench", Topic.COLLECTIONS, Level.BEGINNER, 5),
        lambda quiz: len(quiz.generated) == 3 and len(quiz.questions) == 5,
    )
    server.shutdown()

    snapshot = stats.snapshot()
    print(
        f"\nexercise drafts: {snapshot['drafts']} generated, {snapshot['rejected']} rejected "
        f"({snapshot['rejected_share']:.0%}) by reason "
        f"{dict(sorted(snapshot['rejected_by_reason'].items()))}"
    )
    print(f"served: {dict(sorted(snapshot['served'].items()))}")
    print(f"quiz questions: {dict(sorted(snapshot['questions'].items()))}")


if __name__ == "__main__":
    main()
