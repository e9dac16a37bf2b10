-- depends: 0002_mastery
-- Students whose history must be rebuilt from a day on: an event from an earlier day
-- arrived. Written in the ingesting transaction, drained by the history job once the
-- student's queue entry has settled, so a backfill costs ingestion nothing and a
-- student's many late events one rebuild.
CREATE TABLE history_pending (
    student_id  text        PRIMARY KEY,
    from_day    date        NOT NULL,
    queued_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX history_pending_queued ON history_pending (queued_at);
