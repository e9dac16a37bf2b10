-- depends: 0008_tenants
-- The tenant of the student an outbox message is about: an erasure deletes that
-- student's unsent announcements, and a student id is unique only within its tenant.
-- Messages from before have none (they were sent long ago).
ALTER TABLE outbox ADD COLUMN tenant text NOT NULL DEFAULT '';
