-- The exercise service's state: graded submissions and generated quizzes. Each row keeps
-- the API message as protobuf bytes (what is returned) plus the columns queries need.

CREATE TABLE submissions (
    student_id    text        NOT NULL,
    submission_id text        NOT NULL,
    exercise_id   text        NOT NULL,
    cohort        text        NOT NULL DEFAULT '',
    passed        boolean     NOT NULL,
    request_id    text,
    message       bytea       NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (student_id, submission_id)
);
CREATE INDEX submissions_recent ON submissions (student_id, created_at DESC);
-- A retried CreateSubmission with the same request_id returns the first result.
CREATE UNIQUE INDEX submissions_request ON submissions (student_id, request_id)
    WHERE request_id IS NOT NULL;

CREATE TABLE quizzes (
    student_id  text        NOT NULL,
    quiz_id     text        NOT NULL,
    cohort      text        NOT NULL DEFAULT '',
    graded      boolean     NOT NULL DEFAULT false,
    message     bytea       NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (student_id, quiz_id)
);
