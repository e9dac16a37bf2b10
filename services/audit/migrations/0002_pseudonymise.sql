-- depends: 0001_audit_events
-- Erasing a student (issue 14, docs/adr/0009) keeps the trail but pseudonymises it:
-- `pseudonymise_student` replaces the student's id with their pseudonym wherever the
-- trail names them (the students touched, resource names `students/{id}...`, the
-- actor when they acted themself). It is the one change the append-only guard lets
-- through: it raises a transaction-local flag that the guard reads, for its own
-- statements only.
CREATE OR REPLACE FUNCTION refuse_audit_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE'
       AND current_setting('learnflow.audit_pseudonymising', true) = 'on' THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'audit.% is append-only: % refused', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;

CREATE FUNCTION pseudonymise_student(p_student text, p_pseudonym text) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    named  text := 'students/' || p_student;
    events bigint;
    links  bigint;
BEGIN
    PERFORM set_config('learnflow.audit_pseudonymising', 'on', true);
    UPDATE audit_events SET
        students = array_replace(students, p_student, p_pseudonym),
        resources = ARRAY(
            SELECT CASE
                WHEN r = named OR starts_with(r, named || '/')
                    THEN 'students/' || p_pseudonym || substr(r, length(named) + 1)
                ELSE r END
            FROM unnest(resources) WITH ORDINALITY AS u(r, n) ORDER BY n),
        actor_subject = CASE WHEN actor_subject = p_student AND actor_role = 'student'
                             THEN p_pseudonym ELSE actor_subject END
    WHERE p_student = ANY(students)
       OR (actor_subject = p_student AND actor_role = 'student')
       OR EXISTS (SELECT 1 FROM unnest(resources) r
                  WHERE r = named OR starts_with(r, named || '/'));
    GET DIAGNOSTICS events = ROW_COUNT;
    UPDATE audit_event_students SET student_id = p_pseudonym WHERE student_id = p_student;
    GET DIAGNOSTICS links = ROW_COUNT;
    PERFORM set_config('learnflow.audit_pseudonymising', 'off', true);
    RETURN events + links;
END
$$;
