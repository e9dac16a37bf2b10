-- depends: 0001_exercise
-- Generated exercises and quiz questions. A generated exercise is stored as the domain
-- exercise serialised to JSON (tests, hidden ones included, and the reference solution:
-- grading needs them), so every replica of the service can show and grade it. It
-- belongs to the student it was generated for: that student, staff of their cohort and
-- admins may read it. A quiz's generated questions (with their answers) are kept with
-- the quiz, since only grading that quiz needs them.

CREATE TABLE generated_exercises (
    exercise_id  text        PRIMARY KEY,
    student_id   text        NOT NULL,
    cohort       text        NOT NULL DEFAULT '',
    topic        integer     NOT NULL,
    difficulty   integer     NOT NULL,
    focus_error  text        NOT NULL DEFAULT '',
    exercise     jsonb       NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX generated_exercises_student ON generated_exercises (student_id, created_at DESC);

ALTER TABLE quizzes ADD COLUMN generated_questions jsonb NOT NULL DEFAULT '[]'::jsonb;
