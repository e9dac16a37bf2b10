"""Traceback parsing accuracy and parse+hint latency on the debug evaluation set.

The set is tests/debug/programs/ (buggy beginner programs with their true error type
and line). Each program is really run once, in the sandbox's isolation (as the debug
service's runs are; `--python` runs `python -X utf8 student_<name>.py` instead, whose
tracebacks carry another file name and absolute paths), and its stderr is the input.

Rows, interleaved so machine noise hits them alike:

  baseline      the last line matched with `^(\\w+): (.*)$` for the type, and the last
                `line N` in the text for the line: what a one-regex parser gets
  parse         parse_traceback(stderr, code)
  parse+hints   parse_traceback, then build_hints (all three levels) and topic_for

Accuracy is the share of programs whose (type, line) is exactly right. Latency is per
call in microseconds, median and p99 over every call of every program; the ratio is
to the baseline's median.

    .venv/bin/python bench/bench_debug_parse.py [--rounds 200] [--quick] [--python]
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from services.debug.domain.hints import build_hints
from services.debug.domain.topics import topic_for
from services.debug.domain.traceback import parse_traceback
from services.sandbox.domain.limits import Limits
from services.sandbox.isolation.base import detect
from tests.debug.conftest import Program, load_programs

LAST_LINE = re.compile(r"^(\w+): (.*)$")
LINE_NUMBER = re.compile(r"line (\d+)")
Guess = tuple[str, int | None] | None


def baseline(stderr: str, code: str) -> Guess:
    """The one-regex parser: type from the last line, line from the last `line N`."""
    lines = stderr.strip().splitlines()
    found = LAST_LINE.match(lines[-1]) if lines else None
    if found is None:
        return None
    numbers = LINE_NUMBER.findall(stderr)
    return found.group(1), int(numbers[-1]) if numbers else None


def parsed(stderr: str, code: str) -> Guess:
    result = parse_traceback(stderr, code)
    return (result.error.error_type, result.error.line) if result else None


def parsed_and_hinted(stderr: str, code: str) -> Guess:
    result = parse_traceback(stderr, code)
    if result is None:
        return None
    build_hints(result, code)
    topic_for(result, code)
    return result.error.error_type, result.error.line


def run_in_sandbox(programs: list[Program]) -> list[str]:
    isolation = detect()
    limits = Limits(wall_seconds=10, cpu_seconds=10, max_output_bytes=1024 * 1024)
    return [isolation.run(p.code, p.stdin, limits).stderr for p in programs]


def run_with_python(programs: list[Program]) -> list[str]:
    out = []
    for program in programs:
        with tempfile.TemporaryDirectory(prefix="bench-debug-") as folder:
            path = Path(folder) / f"student_{program.name}.py"
            path.write_text(program.code)
            done = subprocess.run(
                [sys.executable, "-X", "utf8", path.name],
                input=program.stdin,
                capture_output=True,
                text=True,
                cwd=folder,
                timeout=10,
                check=False,
            )
            out.append(done.stderr)
    return out


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=200, help="calls per program and row")
    parser.add_argument("--quick", action="store_true", help="20 rounds")
    parser.add_argument("--python", action="store_true", help="run with python, not the sandbox")
    args = parser.parse_args()
    rounds = 20 if args.quick else args.rounds

    programs = load_programs()
    started = time.perf_counter()
    stderrs = run_with_python(programs) if args.python else run_in_sandbox(programs)
    how = "python -X utf8" if args.python else "the sandbox"
    print(
        f"{len(programs)} programs run in {how} in {time.perf_counter() - started:.1f} s; "
        f"Python {sys.version.split()[0]}, {os.cpu_count()} cores, {rounds} rounds\n"
    )

    rows: dict[str, Callable[[str, str], Guess]] = {
        "baseline": baseline,
        "parse": parsed,
        "parse+hints": parsed_and_hinted,
    }
    print(f"{'row':<12} {'type':>6} {'line':>6} {'both':>6}")
    for name, call in rows.items():
        guesses = [call(err, p.code) for p, err in zip(programs, stderrs, strict=True)]
        types = sum(
            g is not None and g[0] == p.error_type for p, g in zip(programs, guesses, strict=True)
        )
        lines = sum(
            g is not None and g[1] == p.line for p, g in zip(programs, guesses, strict=True)
        )
        both = sum(g == (p.error_type, p.line) for p, g in zip(programs, guesses, strict=True))
        n = len(programs)
        print(f"{name:<12} {types / n:>6.1%} {lines / n:>6.1%} {both / n:>6.1%}")
    misses = [
        (p.name, baseline(err, p.code))
        for p, err in zip(programs, stderrs, strict=True)
        if baseline(err, p.code) != (p.error_type, p.line)
    ]
    print(
        f"\nbaseline misses ({len(misses)}), e.g.: "
        + "; ".join(f"{n} -> {g}" for n, g in misses[:5])
    )

    times: dict[str, list[float]] = {name: [] for name in rows}
    for call in rows.values():  # warm-up: imports, regex caches
        for program, err in zip(programs, stderrs, strict=True):
            call(err, program.code)
    for _ in range(rounds):
        for program, err in zip(programs, stderrs, strict=True):
            for name, call in rows.items():
                begin = time.perf_counter_ns()
                call(err, program.code)
                times[name].append((time.perf_counter_ns() - begin) / 1000)
    base = statistics.median(times["baseline"])
    print(f"\n{'row':<12} {'median µs':>10} {'p99 µs':>10} {'x baseline':>11}")
    for name, values in times.items():
        median = statistics.median(values)
        print(
            f"{name:<12} {median:>10.1f} {percentile(values, 0.99):>10.1f} {median / base:>10.1f}x"
        )


if __name__ == "__main__":
    main()
