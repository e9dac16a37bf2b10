-- depends: 0010_evidence_baseline
-- The student's profile (UpdateStudent, issue 15): a display name, and whether they
-- chose their time zone. Until they do, each event's time zone (their device's) is
-- theirs; once chosen, events no longer change it.
ALTER TABLE students ADD COLUMN display_name text NOT NULL DEFAULT '';
ALTER TABLE students ADD COLUMN time_zone_chosen boolean NOT NULL DEFAULT false;
