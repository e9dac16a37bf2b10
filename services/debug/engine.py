"""The debug agent's application service: diagnose an error, keep its hint ladder,
reveal one level per request, record the occurrence and announce struggle; each
diagnosis and hint goes to the student's other screens too (learning.responses).

A diagnosis works out all three hint levels at once (so every level is checked before
anything is shown) and stores them; the API shows only the levels revealed so far.

Everything happens in the tenant the request acts in (`Request.tenant`, the caller's
`Principal.tenant`): the rows stored, the struggle windows, and the tenant named on every
event published.
"""

from __future__ import annotations

import difflib
import logging
import traceback as tb
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from google.protobuf.timestamp_pb2 import Timestamp
from learnflow.debug.v1 import debug_pb2
from learnflow.events.v1 import events_pb2
from pydantic import BaseModel, Field

from services.debug.domain.edits import Fix
from services.debug.domain.hints import HintSet, build_hints, leaks_fix
from services.debug.domain.topics import topic_for
from services.debug.domain.traceback import ParsedError, ParsedTraceback, parse_traceback
from services.debug.store import DebugStore, StoredDiagnosis
from services.debug.struggle import WINDOW_SECONDS, StruggleDetector
from services.kit.bus import PROGRESS_EVENTS, STRUGGLE_DETECTED, Publisher
from services.kit.errors import FailedPrecondition, NotFound
from services.kit.llm import LLM, LLMUnavailable, PromptTemplates
from services.kit.peers import ProgramRun
from services.kit.responses import LearningResponses

log = logging.getLogger("learnflow.debug")

PROMPTS = Path(__file__).parent / "prompts"
STUDENT_FILE = "main.py"
LEVELS = 3
RunProgram = Callable[[str], ProgramRun]


@dataclass(frozen=True, slots=True)
class Request:
    tenant: str
    student_id: str
    cohort: str
    code: str
    traceback: str
    exercise: str


class ModelHints(BaseModel):
    """What the model must return: three hints and the whole corrected program."""

    general: str = Field(min_length=1, max_length=1500)
    specific: str = Field(min_length=1, max_length=1500)
    solution: str = Field(min_length=1, max_length=2500)
    fixed_code: str = Field(min_length=1, max_length=64 * 1024)


def _stamp(moment: datetime) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(moment)
    return ts


def _error_message(error: ParsedError) -> debug_pb2.ParsedError:
    message = debug_pb2.ParsedError(
        error_type=error.error_type,
        message=error.message,
        source_line=error.source_line,
        function=error.function,
        notes=list(error.notes),
    )
    if error.line:
        message.span.line = error.line
        message.span.column = error.column or 0
        message.span.end_line = error.end_line or 0
        message.span.end_column = error.end_column or 0
    return message


def syntax_traceback(code: str) -> str | None:
    """The traceback Python would print for code that does not compile (found without
    running anything), or None when it compiles."""
    try:
        compile(code, STUDENT_FILE, "exec", dont_inherit=True)
    except (SyntaxError, ValueError) as exc:
        return "".join(tb.format_exception_only(type(exc), exc))
    return None


class DebugEngine:
    def __init__(
        self,
        store: DebugStore,
        *,
        detector: StruggleDetector,
        publisher: Publisher,
        run: RunProgram,
        responses: LearningResponses,
        llm: LLM,
        prompts: PromptTemplates | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._store = store
        self._detector = detector
        self._publisher = publisher
        self._responses = responses
        self._run = run
        self._llm = llm
        self._prompts = prompts or PromptTemplates(PROMPTS)
        self._clock = clock

    # -- diagnosing ----------------------------------------------------------------

    def diagnose(self, request: Request) -> debug_pb2.Diagnosis:
        now = self._clock()
        diagnosis_id = uuid.uuid4().hex[:16]
        name = f"students/{request.student_id}/diagnoses/{diagnosis_id}"
        diagnosis = debug_pb2.Diagnosis(
            name=name,
            code=request.code,
            traceback=request.traceback,
            exercise=request.exercise,
            create_time=_stamp(now),
        )
        parsed = self._parse(request.code, request.traceback)
        ladder = debug_pb2.Diagnosis()
        if parsed is None:
            diagnosis.no_error = True
        else:
            diagnosis.error.CopyFrom(_error_message(parsed.error))
            diagnosis.chain.extend(_error_message(e) for e in parsed.chain)
            diagnosis.topic = int(topic_for(parsed, request.code))  # type: ignore[assignment]
            hints = self._hints(parsed, request.code)
            ladder.hints.extend(
                debug_pb2.Hint(level=int(h.level), text=h.text, fixed_code=h.fixed_code)  # type: ignore[arg-type]
                for h in (hints.general, hints.specific, hints.solution)
            )
            # Diagnosing is the first request for help: the general hint comes with it.
            ladder.hints[0].reveal_time.CopyFrom(_stamp(now))
        revealed = 0 if parsed is None else 1
        occurrence = self._store.add_diagnosis(
            request.tenant,
            student_id=request.student_id,
            diagnosis_id=diagnosis_id,
            cohort=request.cohort,
            error_type=diagnosis.error.error_type,
            topic=diagnosis.topic,
            message=diagnosis.SerializeToString(),
            ladder=ladder.SerializeToString(),
            revealed=revealed,
        )
        if parsed is not None:
            diagnosis.struggle_detected = self._observe(request, diagnosis, occurrence, now)
            self._hint_revealed(request, diagnosis, level=1, at=now)
        diagnosis.hints.extend(ladder.hints[:revealed])
        self._responses.answer(
            request.student_id,
            diagnosis_markdown(diagnosis),
            resource=diagnosis.name,
            cohort=request.cohort,
        )
        return diagnosis

    def _parse(self, code: str, traceback_text: str) -> ParsedTraceback | None:
        if traceback_text.strip():
            parsed = parse_traceback(traceback_text, code)
            if parsed is not None:
                return parsed
            log.info("traceback not recognised; running the code instead")
        syntax = syntax_traceback(code)
        if syntax is not None:
            return parse_traceback(syntax, code)
        run = self._run(code)
        if run.timed_out:
            return parse_traceback(
                "Traceback (most recent call last):\n"
                f'  File "{STUDENT_FILE}", line 1, in <module>\n'
                "TimeoutError: the program was still running when its time ran out "
                "(is there a loop that never ends, or an input() waiting?)\n",
                code,
            )
        if run.ok or not run.stderr.strip():
            return None
        return parse_traceback(run.stderr, code)

    # -- hints ---------------------------------------------------------------------

    def _hints(self, parsed: ParsedTraceback, code: str) -> HintSet:
        offline = build_hints(parsed, code)
        if not self._llm.enabled:
            return offline
        error = parsed.error
        try:
            model = self._llm.structured(
                self._prompts.render(
                    "hints",
                    code=code,
                    error_type=error.error_type,
                    message=error.message,
                    line=error.line or 0,
                    source_line=error.source_line,
                ),
                ModelHints,
                agent="debug",
            )
        except LLMUnavailable:
            return offline
        problem = self._check_model_hints(model, parsed, code)
        if problem:
            log.info("model hints refused; offline hints used", extra={"reason": problem})
            return offline
        fix = _fix_from(code, model.fixed_code)
        return HintSet(
            general=offline.general.__class__(offline.general.level, model.general),
            specific=offline.specific.__class__(offline.specific.level, model.specific),
            solution=offline.solution.__class__(
                offline.solution.level, model.solution, model.fixed_code
            ),
            fix=fix,
        )

    def _check_model_hints(  # noqa: PLR0911 - one return per reason, read top to bottom
        self, model: ModelHints, parsed: ParsedTraceback, code: str
    ) -> str:
        """Why the model's hints may not be shown ("" when they may): the early levels
        must not give the fix away, and the fix must really remove the error."""
        fix = _fix_from(code, model.fixed_code)
        if fix is None:
            return "the fixed code changes nothing"
        # Compared with quotes made alike: 'x' and "x" are the same fix given away.
        same_quotes = _fix_from(_quotes_alike(code), _quotes_alike(model.fixed_code)) or fix
        originals = _quotes_alike(code).splitlines()
        if leaks_fix(_quotes_alike(model.general), same_quotes, originals):
            return "the general hint contains the fix"
        if leaks_fix(_quotes_alike(model.specific), same_quotes, originals):
            return "the specific hint contains the fix"
        if syntax_traceback(model.fixed_code) is not None:
            return "the fixed code does not compile"
        run = self._run(model.fixed_code)
        if run.timed_out:
            return "the fixed code does not finish"
        if not run.ok:
            again = parse_traceback(run.stderr, model.fixed_code)
            if again is None or again.error.error_type == parsed.error.error_type:
                return f"the fixed code still fails: {run.stderr.strip()[-200:]}"
        return ""

    # -- the ladder ------------------------------------------------------------------

    def reveal_next(self, tenant: str, student_id: str, diagnosis_id: str) -> debug_pb2.Diagnosis:
        stored = self._store.diagnosis(tenant, student_id, diagnosis_id)
        name = f"students/{student_id}/diagnoses/{diagnosis_id}"
        if stored is None:
            raise NotFound(f"{name} does not exist", metadata={"resource": name})
        ladder = debug_pb2.Diagnosis.FromString(stored.ladder)
        if not ladder.hints:
            raise FailedPrecondition(f"{name} found no error: there is nothing to hint at")
        now = self._clock()
        revealed = self._store.reveal_next(
            tenant, student_id, diagnosis_id, len(ladder.hints), stamp=_stamp_level(now)
        )
        if revealed is None:
            raise NotFound(f"{name} does not exist", metadata={"resource": name})
        if revealed == stored.revealed:
            raise FailedPrecondition(
                f"every hint of {name} has been shown (the last was the solution)"
            )
        diagnosis = self.render(self._store.diagnosis(tenant, student_id, diagnosis_id) or stored)
        request = Request(
            tenant=tenant,
            student_id=student_id,
            cohort=stored.cohort,
            code=diagnosis.code,
            traceback="",
            exercise=diagnosis.exercise,
        )
        self._hint_revealed(request, diagnosis, level=revealed, at=now)
        self._responses.answer(
            student_id,
            hint_markdown(diagnosis.hints[-1], of=len(ladder.hints)),
            resource=diagnosis.name,
            cohort=stored.cohort,
        )
        return diagnosis

    @staticmethod
    def render(stored: StoredDiagnosis) -> debug_pb2.Diagnosis:
        """The API message: the diagnosis with the hints revealed so far."""
        diagnosis = debug_pb2.Diagnosis.FromString(stored.message)
        ladder = debug_pb2.Diagnosis.FromString(stored.ladder)
        diagnosis.hints.extend(ladder.hints[: stored.revealed])
        return diagnosis

    # -- events ----------------------------------------------------------------------

    def _student(self, request: Request) -> events_pb2.StudentRef:
        return events_pb2.StudentRef(
            student_id=request.student_id, cohort=request.cohort, tenant=request.tenant
        )

    def _hint_revealed(
        self, request: Request, diagnosis: debug_pb2.Diagnosis, *, level: int, at: datetime
    ) -> None:
        self._publisher.publish(
            PROGRESS_EVENTS,
            events_pb2.HintRevealed(
                student=self._student(request),
                topic=diagnosis.topic,
                diagnosis=diagnosis.name,
                error_type=diagnosis.error.error_type,
                hint_level=level,
                occur_time=_stamp(at),
            ),
            key=request.student_id,
            event_id=f"{diagnosis.name}/hints/{level}",  # stable: a retry is the same event
        )

    def _observe(
        self, request: Request, diagnosis: debug_pb2.Diagnosis, occurrence: int, now: datetime
    ) -> bool:
        error_type = diagnosis.error.error_type
        try:
            seen = self._detector.observe(
                request.tenant, request.student_id, error_type, str(occurrence), now.timestamp()
            )
        except Exception:
            # The window lives in Redis; without it detection pauses, history does not.
            log.warning("struggle window unavailable", exc_info=True)
            return False
        if seen.new_episode is None:
            return seen.struggling
        evidence = self._store.occurrences_since(
            request.tenant, request.student_id, error_type, now.timestamp() - WINDOW_SECONDS
        )
        self._store.record_episode(
            request.tenant,
            episode_id=seen.new_episode,
            student_id=request.student_id,
            error_type=error_type,
            topic=diagnosis.topic,
            count=seen.count,
        )
        self._publisher.publish(
            STRUGGLE_DETECTED,
            events_pb2.StruggleDetected(
                student=self._student(request),
                kind=events_pb2.StruggleDetected.KIND_REPEATED_ERROR,
                topic=diagnosis.topic,
                error_type=error_type,
                occurrence_count=seen.count,
                episode_id=seen.new_episode,
                window_start_time=_stamp(
                    datetime.fromtimestamp(now.timestamp() - WINDOW_SECONDS, UTC)
                ),
                detect_time=_stamp(now),
                evidence_ids=[f"students/{request.student_id}/diagnoses/{d}" for d in evidence],
            ),
            key=request.student_id,
            event_id=f"struggle-{seen.new_episode}",
        )
        log.info(
            "struggle detected",
            extra={
                "tenant": request.tenant,
                "student": request.student_id,
                "error_type": error_type,
                "count": seen.count,
            },
        )
        return True


def diagnosis_markdown(diagnosis: debug_pb2.Diagnosis) -> str:
    """The diagnosis for a live screen: the error, where, and the hint shown with it."""
    if diagnosis.no_error:
        return "## No error\n\nThe code ran without raising an error."
    error = diagnosis.error
    where = f" on line {error.span.line}" if error.span.line else ""
    parts = [f"## {error.error_type}{where}", f"Python says: *{error.message}*"]
    parts.extend(hint.text.strip() for hint in diagnosis.hints)
    return "\n\n".join(parts)


def hint_markdown(hint: debug_pb2.Hint, *, of: int) -> str:
    """A hint just revealed, for a live screen."""
    parts = [f"**Hint {int(hint.level)} of {of}**", hint.text.strip()]
    if hint.fixed_code:
        parts.append(f"```python\n{hint.fixed_code.rstrip()}\n```")
    return "\n\n".join(parts)


def _stamp_level(now: datetime) -> Callable[[bytes, int], bytes]:
    def stamp(ladder: bytes, level: int) -> bytes:
        message = debug_pb2.Diagnosis.FromString(ladder)
        message.hints[level - 1].reveal_time.CopyFrom(_stamp(now))
        return message.SerializeToString()

    return stamp


def _quotes_alike(text: str) -> str:
    return text.replace("'", '"')


def _fix_from(code: str, fixed_code: str) -> Fix | None:
    """The model's fixed program as a Fix: the lines it changed or added."""
    before = code.splitlines()
    after = fixed_code.splitlines()
    changed: list[tuple[int, str]] = []
    matcher = difflib.SequenceMatcher(a=before, b=after, autojunk=False)
    for op, _, _, j1, j2 in matcher.get_opcodes():
        if op in ("replace", "insert"):
            changed.extend((j + 1, after[j].strip()) for j in range(j1, j2))
    if not changed:
        return None
    return Fix(
        fixed_code=fixed_code,
        lines=tuple(n for n, _ in changed),
        corrected_lines=tuple(text for _, text in changed if text),
        summary="",
    )
