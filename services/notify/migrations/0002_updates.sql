-- The update log behind StreamUpdates: every deliverable update, in commit order.
-- `seq` is the cursor. Writers take a transaction-level advisory lock before inserting
-- (services/notify/updates.py), so seq order is commit order and a reader that has
-- seen seq N has seen every committed update before it.
CREATE TABLE updates (
    seq         bigserial   PRIMARY KEY,
    -- The audience: a student's own stream (student_id) and/or the teachers of a
    -- cohort (cohort). NULL: not for that kind of subscriber.
    student_id  text,
    cohort      text,
    -- learnflow.notify.v1.Update, serialized, without its cursor.
    payload     bytea       NOT NULL,
    -- The CloudEvent it came from, for updates made from events (idempotency).
    ce_source   text,
    ce_id       text,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX updates_once_per_event ON updates (ce_source, ce_id)
    WHERE ce_id IS NOT NULL;
CREATE INDEX updates_by_student ON updates (student_id, seq) WHERE student_id IS NOT NULL;
CREATE INDEX updates_by_cohort ON updates (cohort, seq) WHERE cohort IS NOT NULL;
CREATE INDEX updates_by_time ON updates (created_at);

-- How far the log has been purged: a cursor below this is too old to resume from.
CREATE TABLE updates_horizon (
    id             boolean PRIMARY KEY DEFAULT TRUE CHECK (id),
    purged_through bigint  NOT NULL DEFAULT 0
);
INSERT INTO updates_horizon DEFAULT VALUES;
