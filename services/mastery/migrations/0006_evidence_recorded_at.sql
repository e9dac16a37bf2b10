-- depends: 0005_evidence_is_the_inbox
-- When each piece of evidence was recorded (its batch's transaction time), now that the
-- evidence row is the inbox: what processed_events.processed_at told operators (and the
-- benchmark, which reads batch sizes and cycle times from it).
ALTER TABLE evidence ADD COLUMN recorded_at timestamptz NOT NULL DEFAULT now();
-- Nothing reads evidence by time across students; per student the primary key serves.
DROP INDEX evidence_recent;
