-- The student roster every service shares (kit-owned schema `roster`): the cohort a
-- student is in now. Authorisation of a student's resources asks it, not the caller's
-- token and not the cohort recorded when the resource was made.
CREATE TABLE students (
    student_id  text        PRIMARY KEY,
    cohort      text        NOT NULL DEFAULT '',
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX students_by_cohort ON students (cohort);
