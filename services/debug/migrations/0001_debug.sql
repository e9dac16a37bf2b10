-- The debug service's state. A diagnosis keeps the API message as protobuf bytes with
-- every hint level already worked out (`ladder`), and `revealed` says how many of them
-- the student has asked for: the API shows only those.

CREATE TABLE diagnoses (
    student_id    text        NOT NULL,
    diagnosis_id  text        NOT NULL,
    cohort        text        NOT NULL DEFAULT '',
    error_type    text        NOT NULL DEFAULT '',
    topic         smallint    NOT NULL DEFAULT 0,
    message       bytea       NOT NULL,
    ladder        bytea       NOT NULL,
    revealed      smallint    NOT NULL DEFAULT 0,
    created_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (student_id, diagnosis_id)
);
CREATE INDEX diagnoses_recent ON diagnoses (student_id, created_at DESC);

-- Every error a student met, for history (struggle detection itself uses Redis
-- windows; these rows are what survives losing Redis).
CREATE TABLE error_occurrences (
    id            bigserial   PRIMARY KEY,
    student_id    text        NOT NULL,
    error_type    text        NOT NULL,
    topic         smallint    NOT NULL,
    diagnosis_id  text        NOT NULL,
    occurred_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX error_occurrences_recent ON error_occurrences (student_id, occurred_at DESC);

-- Struggle episodes announced on struggle.detected (one row, one event).
CREATE TABLE struggle_episodes (
    episode_id        text        PRIMARY KEY,
    student_id        text        NOT NULL,
    error_type        text        NOT NULL,
    topic             smallint    NOT NULL,
    occurrence_count  integer     NOT NULL,
    detected_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX struggle_episodes_student ON struggle_episodes (student_id, detected_at DESC);
