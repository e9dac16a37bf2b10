"""The hint ladder: general, then specific, then the solution, one level per request.

`build_hints` turns a parsed error and the student's code into the three offline hints:

- GENERAL: what kind of problem this is and where to look (the line, the function), in
  plain words. It never contains code from the fix: not the corrected line, not the
  fixed program (checked here, whitespace ignored, before it is returned).
- SPECIFIC: the exact line, name or value and what is wrong with it; still no fix.
- SOLUTION: the corrected line(s) and, in `fixed_code`, the whole corrected program when
  a mechanical fix is known (it is valid Python, checked by compiling it); otherwise how
  to fix it in words, with an example, and `fixed_code` empty.

`HintLadder` enforces the order: a level is given only after every level before it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from enum import IntEnum

from services.debug.domain.edits import Fix, Program
from services.debug.domain.rules import Advice, advise
from services.debug.domain.traceback import ParsedError, ParsedTraceback

__all__ = [
    "Hint",
    "HintLadder",
    "HintLevel",
    "HintSet",
    "LadderError",
    "build_hints",
    "leaks_fix",
    "normalise_code",
]


class HintLevel(IntEnum):
    """Values match learnflow.debug.v1.HintLevel."""

    GENERAL = 1
    SPECIFIC = 2
    SOLUTION = 3


@dataclass(frozen=True, slots=True)
class Hint:
    """One hint: Markdown `text`; `fixed_code` is the whole corrected program (solution
    level only, and only when a mechanical fix is known)."""

    level: HintLevel
    text: str
    fixed_code: str = ""


@dataclass(frozen=True, slots=True)
class HintSet:
    """The three hints for one error, and the fix behind the solution (if any)."""

    general: Hint
    specific: Hint
    solution: Hint
    fix: Fix | None = None

    def at(self, level: HintLevel) -> Hint:
        return {
            HintLevel.GENERAL: self.general,
            HintLevel.SPECIFIC: self.specific,
            HintLevel.SOLUTION: self.solution,
        }[level]

    @property
    def corrected_lines(self) -> tuple[str, ...]:
        return self.fix.corrected_lines if self.fix else ()


class LadderError(ValueError):
    """Levels revealed out of order, twice, or past the solution."""


class HintLadder:
    """The order of the ladder: GENERAL, SPECIFIC, SOLUTION, no skipping."""

    ORDER: tuple[HintLevel, ...] = (HintLevel.GENERAL, HintLevel.SPECIFIC, HintLevel.SOLUTION)

    @classmethod
    def check(cls, revealed: Sequence[HintLevel]) -> None:
        """Raises LadderError unless `revealed` is a prefix of the ladder."""
        if tuple(revealed) != cls.ORDER[: len(revealed)]:
            shown = ", ".join(level.name for level in revealed) or "nothing"
            raise LadderError(f"hint levels must be revealed in order, one each; got {shown}")

    @classmethod
    def next_level(cls, revealed: Sequence[HintLevel]) -> HintLevel | None:
        """The level to reveal next, or None when all three are out."""
        cls.check(revealed)
        return cls.ORDER[len(revealed)] if len(revealed) < len(cls.ORDER) else None

    @classmethod
    def reveal(cls, revealed: Sequence[HintLevel], level: HintLevel) -> tuple[HintLevel, ...]:
        """`revealed` plus `level`; raises LadderError unless `level` is the next one."""
        expected = cls.next_level(revealed)
        if expected is None:
            raise LadderError("every hint level has already been revealed")
        if level != expected:
            raise LadderError(f"the next hint level is {expected.name}, not {level.name}")
        return (*revealed, level)


def normalise_code(text: str) -> str:
    """`text` without any whitespace: how hints are compared with code."""
    return "".join(text.split())


def leaks_fix(text: str, fix: Fix | None, original_lines: Sequence[str] = ()) -> bool:
    """True when `text` contains a corrected line or the fixed program (whitespace
    ignored). A corrected line that is also in the student's own line (e.g. only its
    indentation changed) is not a leak when `original_lines` holds that line."""
    if fix is None:
        return False
    flat = normalise_code(text)
    originals = [normalise_code(line) for line in original_lines]
    if normalise_code(fix.fixed_code) in flat:
        return True
    for line in fix.corrected_lines:
        needle = normalise_code(line)
        if not needle or any(needle in original for original in originals):
            continue
        if needle in flat:
            return True
    return False


def _where(error: ParsedError, parsed: ParsedTraceback | None, *, function: bool = True) -> str:
    if error.line is None:
        return "The traceback does not say which line of your program this happened on."
    where = f"Look at line {error.line}"
    if function and error.function and not error.function.startswith("<"):
        where += f", inside the function `{error.function}`"
    elif error.function.startswith("<") and error.function.endswith("comp>"):
        where += ", inside the comprehension"
    where += "."
    if error.raised_in_library and error.frames:
        where += (
            " The error was raised inside Python's own code, called from that line of "
            "yours: the value your line passes in is what to check."
        )
    if parsed is not None and parsed.chain:
        first = parsed.chain[0]
        where += (
            f" Python printed {len(parsed.errors)} errors: a {first.short_type} happened "
            f"first{f' (line {first.line})' if first.line else ''}, and while it was being "
            f"handled this {error.short_type} stopped the program."
        )
    return where


def _general_candidates(
    error: ParsedError, advice: Advice, parsed: ParsedTraceback | None
) -> list[str]:
    """The general hint, then plainer versions of it (used when a version would contain
    the fix, e.g. a corrected line that is just the function's name)."""
    plain = (
        f"**{error.short_type}.** Read the last line of the traceback: it names the kind of "
        "error and gives a short explanation."
    )
    return [
        f"**{error.short_type}.** {advice.general}\n\n{_where(error, parsed)}",
        f"{plain}\n\n{_where(error, parsed)}",
        f"{plain}\n\n{_where(error, None, function=False)}",
    ]


def _solution_text(advice: Advice) -> str:
    fix = advice.fix
    if fix is None:
        return advice.words
    fixed = Program(fix.fixed_code)
    numbers = fix.lines
    shown = "\n".join(fixed.line(n) for n in numbers)
    place = (
        f"line {numbers[0]}"
        if len(numbers) == 1
        else f"lines {numbers[0]}-{numbers[-1]}"
        if numbers == tuple(range(numbers[0], numbers[-1] + 1))
        else "lines " + ", ".join(str(n) for n in numbers)
    )
    text = f"{fix.summary}\n\nIn the corrected program, {place}:\n\n```python\n{shown}\n```\n"
    if advice.explanation:
        text += f"\n{advice.explanation}\n"
    text += "\nThe whole corrected program is attached."
    return text


def build_hints(parsed: ParsedTraceback | ParsedError, code: str) -> HintSet:
    """The three offline hints for the final error of `parsed` in `code`."""
    if isinstance(parsed, ParsedTraceback):
        error, context = parsed.error, parsed
    else:
        error, context = parsed, None
    program = Program(code)
    advice = advise(error, code, causes=context.chain if context else ())
    candidates = _general_candidates(error, advice, context)
    general = next((text for text in candidates if not leaks_fix(text, advice.fix)), None)
    if general is None:
        # Every wording would give the fix away (a corrected line of a word or two):
        # the fix is left out and the solution explains it in words.
        advice = replace(advice, fix=None)
        general = candidates[0]
    fix = advice.fix
    originals = [program.line(error.line)] if error.line else []
    if fix is not None:
        originals += [program.line(n) for n in fix.lines]
    specific = advice.specific
    if leaks_fix(specific, fix, originals):
        where = f"Line {error.line}: " if error.line else ""
        specific = f"{where}Python says *{error.message or error.short_type}*."
    return HintSet(
        general=Hint(HintLevel.GENERAL, general),
        specific=Hint(HintLevel.SPECIFIC, specific),
        solution=Hint(
            HintLevel.SOLUTION,
            _solution_text(advice),
            fix.fixed_code if fix else "",
        ),
        fix=fix,
    )
