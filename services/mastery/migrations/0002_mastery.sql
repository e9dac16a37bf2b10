-- depends: 0001_inbox
-- The mastery engine's state. `evidence` is the source of truth (every applied event);
-- the aggregate tables are order-independent summaries of it that make a batch cheap to
-- apply (best score per exercise, additive quiz/quality totals, the set of active days);
-- `mastery_current` and `mastery_daily` are snapshots for listing and history. A batch
-- recalculation rebuilds aggregates and snapshots from `evidence`.

CREATE TABLE students (
    student_id  text        PRIMARY KEY,
    cohort      text        NOT NULL DEFAULT '',
    time_zone   text        NOT NULL DEFAULT 'UTC',
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX students_cohort ON students (cohort, student_id);

CREATE TABLE evidence (
    student_id  text             NOT NULL,
    source      text             NOT NULL,
    event_id    text             NOT NULL,
    event_type  text             NOT NULL,
    component   smallint         NOT NULL,  -- 0: activity only
    topic       smallint         NOT NULL,
    subject     text             NOT NULL,
    value       double precision NOT NULL,
    occur_time  timestamptz      NOT NULL,
    PRIMARY KEY (student_id, source, event_id)
);
CREATE INDEX evidence_recent ON evidence (student_id, occur_time DESC);

CREATE TABLE exercise_best (
    student_id  text             NOT NULL,
    exercise_id text             NOT NULL,
    topic       smallint         NOT NULL,
    best        double precision NOT NULL,
    attempts    integer          NOT NULL,
    PRIMARY KEY (student_id, exercise_id)
);

CREATE TABLE topic_totals (
    student_id    text             NOT NULL,
    topic         smallint         NOT NULL,
    quiz_sum      double precision NOT NULL DEFAULT 0,
    quiz_count    integer          NOT NULL DEFAULT 0,
    quality_sum   double precision NOT NULL DEFAULT 0,
    quality_count integer          NOT NULL DEFAULT 0,
    PRIMARY KEY (student_id, topic)
);

CREATE TABLE active_days (
    student_id  text     NOT NULL,
    topic       smallint NOT NULL,
    day         date     NOT NULL,
    PRIMARY KEY (student_id, day, topic)
);

-- topic 0 is overall.
CREATE TABLE mastery_current (
    student_id  text             NOT NULL,
    topic       smallint         NOT NULL,
    score       double precision NOT NULL,
    band        smallint         NOT NULL,
    completion  double precision NOT NULL,
    quiz        double precision NOT NULL,
    quality     double precision NOT NULL,
    consistency double precision NOT NULL,
    updated_at  timestamptz      NOT NULL,
    PRIMARY KEY (student_id, topic)
);
CREATE INDEX mastery_current_overall ON mastery_current (topic, score);

CREATE TABLE mastery_daily (
    student_id  text             NOT NULL,
    topic       smallint         NOT NULL,
    day         date             NOT NULL,
    score       double precision NOT NULL,
    completion  double precision NOT NULL,
    quiz        double precision NOT NULL,
    quality     double precision NOT NULL,
    consistency double precision NOT NULL,
    event_count integer          NOT NULL,
    PRIMARY KEY (student_id, topic, day)
);

-- Events to publish, written in the same transaction as the change they announce and
-- deleted once the broker has them (transactional outbox: no change is announced twice
-- unless delivery is retried, and none is lost).
CREATE TABLE outbox (
    id          bigserial PRIMARY KEY,
    topic       text  NOT NULL,
    key         text  NOT NULL,
    payload     bytea NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- Long-running operations (google.longrunning) started here.
CREATE TABLE operations (
    name             text        PRIMARY KEY,
    created_by       text        NOT NULL,
    done             boolean     NOT NULL DEFAULT false,
    cancel_requested boolean     NOT NULL DEFAULT false,
    metadata         bytea       NOT NULL,
    response         bytea,
    error_code       integer,
    error_message    text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now()
);
