"""ExerciseService and QuizService: decode, authorise on the message, call the engine,
store, publish, encode.

Every lookup and write is in the tenant the call acts in (`current_principal().tenant`):
a student id names a student of that tenant only. Authorisation asks that tenant's
roster (PERMISSION_DENIED for a student the caller may not read there), and another
tenant's submission, quiz or generated exercise is then simply not there (NOT_FOUND)."""

from __future__ import annotations

import grpc
from learnflow.exercise.v1 import exercise_pb2, exercise_pb2_grpc, quiz_pb2, quiz_pb2_grpc

from services.exercise.answers import ExerciseAnswers
from services.exercise.domain.bank import Exercise, Level, QuestionKind, QuizQuestion, Topic
from services.exercise.domain.generation import error_name, is_generated
from services.exercise.domain.quizzes import Answer
from services.exercise.engine import ExerciseEngine
from services.exercise.graded import GradedWork, now
from services.exercise.store import ExerciseStore
from services.kit.errors import FailedPrecondition, NotFound, Validator
from services.kit.interceptors import current_principal
from services.kit.names import check_name, parse_name
from services.kit.pagination import next_page_token, parse_page
from services.kit.roster import Roster

MAX_CODE_BYTES = 64 * 1024
MAX_TOPIC = max(Topic)


def exercise_message(e: Exercise) -> exercise_pb2.Exercise:
    """The public face of an exercise: hidden tests are counted, never shown."""
    return exercise_pb2.Exercise(
        name=f"exercises/{e.exercise_id}",
        title=e.title,
        topic=int(e.topic),  # type: ignore[arg-type]
        difficulty=int(e.difficulty),  # type: ignore[arg-type]
        statement=e.statement,
        starter_code=e.starter_code,
        visible_tests=[
            exercise_pb2.VisibleTest(
                test_id=t.test_id, description=t.description, call=t.call, expected=t.expected
            )
            for t in e.visible_tests
        ],
        hidden_test_count=len(e.hidden_tests),
        hints=list(e.hints),
        allowed_imports=list(e.allowed_imports),
        origin=exercise_pb2.Exercise.ORIGIN_GENERATED
        if is_generated(e.exercise_id)
        else exercise_pb2.Exercise.ORIGIN_BANK,
    )


class ExerciseServicer(exercise_pb2_grpc.ExerciseServiceServicer):
    def __init__(
        self,
        engine: ExerciseEngine,
        store: ExerciseStore,
        graded: GradedWork,
        answers: ExerciseAnswers,
        roster: Roster,
    ) -> None:
        self._engine = engine
        self._store = store
        self._graded = graded
        self._answers = answers
        self._roster = roster

    def GetExercise(
        self, request: exercise_pb2.GetExerciseRequest, context: grpc.ServicerContext
    ) -> exercise_pb2.Exercise:
        principal = current_principal()
        (exercise_id,) = parse_name(request.name, "exercises/*", "name")
        return exercise_message(
            self._engine.readable_exercise(principal, exercise_id, self._roster)
        )

    def ListExercises(
        self, request: exercise_pb2.ListExercisesRequest, context: grpc.ServicerContext
    ) -> exercise_pb2.ListExercisesResponse:
        current_principal()
        checks = Validator()
        checks.check(0 <= request.topic <= MAX_TOPIC, "topic", "is not a curriculum topic")
        checks.check(0 <= request.difficulty <= max(Level), "difficulty", "is not a level")
        checks.raise_if_invalid()
        query = f"{request.topic}|{request.difficulty}"
        page = parse_page(
            request.page_size, request.page_token, default=50, maximum=200, query=query
        )
        found = self._engine.bank.list_exercises(
            topic=Topic(request.topic) if request.topic else None,
            difficulty=Level(request.difficulty) if request.difficulty else None,
        )
        return exercise_pb2.ListExercisesResponse(
            exercises=[exercise_message(e) for e in found[page.offset : page.offset + page.size]],
            next_page_token=next_page_token(page, len(found), query),
        )

    def GenerateExercise(
        self, request: exercise_pb2.GenerateExerciseRequest, context: grpc.ServicerContext
    ) -> exercise_pb2.Exercise:
        checks = Validator()
        (student_id,) = check_name(checks, request.student, "students/*", "student")
        focus = ""
        if request.focus_error_type.strip():
            focus = error_name(request.focus_error_type) or ""
            checks.check(
                bool(focus),
                "focus_error_type",
                "must be an exception class name such as KeyError (at most 100 characters)",
            )
        if request.topic == 0:
            # A targeted exercise may leave the topic to its error (struggle detection).
            checks.check(
                bool(request.focus_error_type.strip()),
                "topic",
                "is required: a curriculum topic (or give focus_error_type)",
            )
        else:
            checks.check(1 <= request.topic <= MAX_TOPIC, "topic", "is not a curriculum topic")
        checks.check(0 <= request.difficulty <= max(Level), "difficulty", "is not a level")
        checks.raise_if_invalid()
        principal = current_principal()
        principal.require_acting_as(student_id)
        cohort = self._roster.cohort_for_work(principal, student_id)
        tenant = principal.tenant
        chosen = self._engine.generate(
            tenant,
            student_id,
            cohort=cohort,
            topic=Topic(request.topic) if request.topic else None,
            difficulty=Level(request.difficulty) if request.difficulty else None,
            focus_error=focus,
            passed=lambda: self._store.passed_exercises(tenant, student_id),
        )
        message = exercise_message(chosen)
        self._answers.exercise(student_id, cohort, message)
        return message

    def CreateSubmission(
        self, request: exercise_pb2.CreateSubmissionRequest, context: grpc.ServicerContext
    ) -> exercise_pb2.Submission:
        checks = Validator()
        (student_id,) = check_name(checks, request.parent, "students/*", "parent")
        (exercise_id,) = check_name(
            checks, request.submission.exercise, "exercises/*", "submission.exercise"
        )
        code = request.submission.code
        checks.check(bool(code.strip()), "submission.code", "is required")
        checks.check(
            len(code.encode()) <= MAX_CODE_BYTES, "submission.code", "must be at most 64 KiB"
        )
        checks.check(len(request.request_id) <= 128, "request_id", "must be at most 128 characters")
        checks.raise_if_invalid()
        principal = current_principal()
        principal.require_acting_as(student_id)
        return self._graded.submit(
            tenant=principal.tenant,
            student_id=student_id,
            cohort=self._roster.cohort_for_work(principal, student_id),
            exercise_id=exercise_id,
            code=code,
            request_id=request.request_id,
        )

    def GetSubmission(
        self, request: exercise_pb2.GetSubmissionRequest, context: grpc.ServicerContext
    ) -> exercise_pb2.Submission:
        student_id, submission_id = parse_name(request.name, "students/*/submissions/*", "name")
        principal = current_principal()
        # Before any lookup, and exactly as ListSubmissions does.
        self._roster.require_readable(principal, student_id)
        stored = self._store.submission(principal.tenant, student_id, submission_id)
        if stored is None:
            raise NotFound(f"{request.name} does not exist", metadata={"name": request.name})
        return exercise_pb2.Submission.FromString(stored.message)

    def ListSubmissions(
        self, request: exercise_pb2.ListSubmissionsRequest, context: grpc.ServicerContext
    ) -> exercise_pb2.ListSubmissionsResponse:
        (student_id,) = parse_name(request.parent, "students/*", "parent")
        exercise_id = None
        if request.exercise:
            (exercise_id,) = parse_name(request.exercise, "exercises/*", "exercise")
        principal = current_principal()
        self._roster.require_readable(principal, student_id)
        query = request.exercise
        page = parse_page(
            request.page_size, request.page_token, default=20, maximum=100, query=query
        )
        messages, total = self._store.submissions(
            principal.tenant, student_id, exercise_id, page.offset, page.size
        )
        submissions = []
        for raw in messages:
            item = exercise_pb2.Submission.FromString(raw)
            item.ClearField("code")  # listings stay light; GetSubmission has the code
            submissions.append(item)
        return exercise_pb2.ListSubmissionsResponse(
            submissions=submissions, next_page_token=next_page_token(page, total, query)
        )


def _question_message(q: QuizQuestion) -> quiz_pb2.Question:
    """A question as asked: no answer, no expected output, no explanation."""
    kind = (
        quiz_pb2.Question.KIND_MULTIPLE_CHOICE
        if q.kind is QuestionKind.MULTIPLE_CHOICE
        else quiz_pb2.Question.KIND_PREDICT_OUTPUT
    )
    return quiz_pb2.Question(
        question_id=q.question_id, kind=kind, prompt=q.prompt, code=q.code, choices=list(q.choices)
    )


class QuizServicer(quiz_pb2_grpc.QuizServiceServicer):
    def __init__(
        self,
        engine: ExerciseEngine,
        store: ExerciseStore,
        graded: GradedWork,
        answers: ExerciseAnswers,
        roster: Roster,
    ) -> None:
        self._engine = engine
        self._store = store
        self._graded = graded
        self._answers = answers
        self._roster = roster

    def GenerateQuiz(
        self, request: quiz_pb2.GenerateQuizRequest, context: grpc.ServicerContext
    ) -> quiz_pb2.Quiz:
        checks = Validator()
        (student_id,) = check_name(checks, request.parent, "students/*", "parent")
        checks.check(1 <= request.topic <= MAX_TOPIC, "topic", "is required: a curriculum topic")
        checks.check(0 <= request.level <= max(Level), "level", "is not a level")
        checks.check(0 <= request.question_count <= 20, "question_count", "must be 1 to 20")
        checks.raise_if_invalid()
        principal = current_principal()
        principal.require_acting_as(student_id)
        new = self._engine.new_quiz(
            student_id,
            Topic(request.topic),
            Level(request.level) if request.level else None,
            request.question_count or 5,
        )
        quiz = quiz_pb2.Quiz(
            name=f"students/{student_id}/quizzes/{new.quiz_id}",
            topic=request.topic,
            level=int(new.level),  # type: ignore[arg-type]
            questions=[_question_message(q) for q in new.questions],
            state=quiz_pb2.Quiz.STATE_OPEN,
            create_time=now(),
        )
        cohort = self._roster.cohort_for_work(principal, student_id)
        self._store.add_quiz(
            principal.tenant,
            student_id,
            quiz_id=new.quiz_id,
            cohort=cohort,
            message=quiz.SerializeToString(),
            generated=new.generated,
        )
        self._answers.quiz(student_id, cohort, quiz)
        return quiz

    def GetQuiz(
        self, request: quiz_pb2.GetQuizRequest, context: grpc.ServicerContext
    ) -> quiz_pb2.Quiz:
        student_id, quiz_id = parse_name(request.name, "students/*/quizzes/*", "name")
        principal = current_principal()
        self._roster.require_readable(principal, student_id)
        stored = self._store.quiz(principal.tenant, student_id, quiz_id)
        if stored is None:
            raise NotFound(f"{request.name} does not exist", metadata={"name": request.name})
        return quiz_pb2.Quiz.FromString(stored.message)

    def GradeQuiz(
        self, request: quiz_pb2.GradeQuizRequest, context: grpc.ServicerContext
    ) -> quiz_pb2.Quiz:
        student_id, quiz_id = parse_name(request.name, "students/*/quizzes/*", "name")
        principal = current_principal()
        principal.require_acting_as(student_id)
        stored = self._store.quiz(principal.tenant, student_id, quiz_id)
        if stored is None:
            raise NotFound(f"{request.name} does not exist", metadata={"name": request.name})
        if stored.graded:
            raise FailedPrecondition(f"{request.name} is already graded")
        quiz = quiz_pb2.Quiz.FromString(stored.message)
        asked = [q.question_id for q in quiz.questions]
        checks = Validator()
        answers: dict[str, Answer] = {}
        for index, answer in enumerate(request.answers):
            if answer.question_id not in asked:
                checks.add(f"answers[{index}].question_id", "is not a question of this quiz")
            value = answer.WhichOneof("value")
            if value is None:
                checks.add(f"answers[{index}]", "set choice_index or text")
                continue
            answers[answer.question_id] = (
                answer.choice_index if value == "choice_index" else answer.text
            )
        checks.raise_if_invalid()
        return self._graded.grade_quiz(
            principal.tenant,
            student_id,
            quiz,
            answers,
            cohort=stored.cohort,
            generated=stored.generated,
            given=request.answers,
        )
