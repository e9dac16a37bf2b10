-- The notify service's alerts (schema `notify`).

-- Events already applied. The consumer inserts (source, event_id) in the same
-- transaction as the alert it makes or extends, so a redelivered event changes nothing.
CREATE TABLE processed_events (
    source       text        NOT NULL,
    event_id     text        NOT NULL,
    processed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (source, event_id)
);

-- One row per alert. `version` raises with every change; the etag derives from it.
-- `cohort` is the student's cohort when the alert was made (part of its name).
CREATE TABLE alerts (
    alert_id         text        PRIMARY KEY,
    cohort           text        NOT NULL,
    student_id       text        NOT NULL,
    kind             smallint    NOT NULL,
    severity         smallint    NOT NULL,
    state            smallint    NOT NULL,
    title            text        NOT NULL,
    detail           text        NOT NULL DEFAULT '',
    creator          text        NOT NULL DEFAULT '',
    episode_key      text        NOT NULL DEFAULT '',
    episode_id       text        NOT NULL DEFAULT '',
    version          integer     NOT NULL DEFAULT 1,
    created_at       timestamptz NOT NULL,
    updated_at       timestamptz NOT NULL,
    acknowledged_by  text        NOT NULL DEFAULT '',
    acknowledged_at  timestamptz,
    resolved_by      text        NOT NULL DEFAULT '',
    resolved_at      timestamptz,
    resolution_note  text        NOT NULL DEFAULT ''
);
-- One unresolved alert per episode: a continuing episode extends it.
CREATE UNIQUE INDEX alerts_one_open_per_episode ON alerts (episode_key)
    WHERE state <> 3 AND episode_key <> '';
CREATE INDEX alerts_by_cohort ON alerts (cohort, created_at DESC, alert_id DESC);
CREATE INDEX alerts_by_student ON alerts (student_id, created_at DESC);

-- What each alert rests on, in the order it arrived.
CREATE TABLE alert_evidence (
    alert_id        text             NOT NULL REFERENCES alerts (alert_id) ON DELETE CASCADE,
    seq             integer          NOT NULL,
    type            smallint         NOT NULL,
    summary         text             NOT NULL,
    resource        text             NOT NULL DEFAULT '',
    value           double precision NOT NULL DEFAULT 0,
    previous_value  double precision NOT NULL DEFAULT 0,
    occur_time      timestamptz,
    event_source    text             NOT NULL DEFAULT '',
    event_id        text             NOT NULL DEFAULT '',
    PRIMARY KEY (alert_id, seq)
);
