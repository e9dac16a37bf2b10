-- The audit trail (services/audit, docs/architecture.md "Audit trail"): one row per
-- recorded call, in the trail of the tenant the call acted in.
--
-- Tenants are kept apart as everywhere (docs/adr/0006): `tenant` defaults to the
-- transaction's `learnflow.tenant`, and row-level security, forced on the owner too,
-- shows and accepts only that tenant's rows. The consumer writes each tenant's records
-- in that tenant's scope; ListAuditEvents reads in the caller's.
--
-- Append-only: a trigger refuses UPDATE, DELETE and TRUNCATE on both tables. Events
-- are written with INSERT ... ON CONFLICT DO NOTHING (a redelivered event changes
-- nothing) and never changed. Pseudonymising a student's entries (issue 14) will be a
-- dedicated SECURITY DEFINER function that lifts this guard for its own statement
-- only; nothing else may.

CREATE TABLE audit_events (
    tenant        text        NOT NULL DEFAULT current_setting('learnflow.tenant')
                              CONSTRAINT audit_events_tenant_named CHECK (tenant <> ''),
    event_id      text        NOT NULL,
    -- When the call started (the caller's clock is not involved: the server's).
    event_time    timestamptz NOT NULL,
    actor_subject text        NOT NULL,
    actor_role    text        NOT NULL,
    -- The actor's own tenant: differs from `tenant` for an operator acting in another.
    actor_tenant  text        NOT NULL,
    method        text        NOT NULL,
    resources     text[]      NOT NULL DEFAULT '{}',
    students      text[]      NOT NULL DEFAULT '{}',
    request_id    text        NOT NULL DEFAULT '',
    trace_id      text        NOT NULL DEFAULT '',
    peer          text        NOT NULL DEFAULT '',
    code          text        NOT NULL,
    -- When the audit service stored it (how far behind the trail runs).
    record_time   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant, event_id)
);
-- ListAuditEvents: a tenant's newest first; by actor; by method.
CREATE INDEX audit_events_recent ON audit_events (tenant, event_time DESC, event_id DESC);
CREATE INDEX audit_events_by_actor
    ON audit_events (tenant, actor_subject, event_time DESC, event_id DESC);
CREATE INDEX audit_events_by_method
    ON audit_events (tenant, method, event_time DESC, event_id DESC);

-- One row per (event, student it touched): ListAuditEvents by student reads this
-- index newest first and joins the events.
CREATE TABLE audit_event_students (
    tenant     text        NOT NULL DEFAULT current_setting('learnflow.tenant')
                           CONSTRAINT audit_event_students_tenant_named CHECK (tenant <> ''),
    student_id text        NOT NULL,
    event_time timestamptz NOT NULL,
    event_id   text        NOT NULL,
    PRIMARY KEY (tenant, student_id, event_id),
    FOREIGN KEY (tenant, event_id) REFERENCES audit_events (tenant, event_id)
);
CREATE INDEX audit_event_students_recent
    ON audit_event_students (tenant, student_id, event_time DESC, event_id DESC);

ALTER TABLE audit_events ENABLE ROW LEVEL SECURITY;
ALTER TABLE audit_events FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_rows ON audit_events
    USING (tenant = current_setting('learnflow.tenant', true));
ALTER TABLE audit_event_students ENABLE ROW LEVEL SECURITY;
ALTER TABLE audit_event_students FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_rows ON audit_event_students
    USING (tenant = current_setting('learnflow.tenant', true));

CREATE FUNCTION refuse_audit_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit.% is append-only: % refused', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;
CREATE TRIGGER audit_events_append_only
    BEFORE UPDATE OR DELETE ON audit_events
    FOR EACH ROW EXECUTE FUNCTION refuse_audit_change();
CREATE TRIGGER audit_events_no_truncate
    BEFORE TRUNCATE ON audit_events
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_audit_change();
CREATE TRIGGER audit_event_students_append_only
    BEFORE UPDATE OR DELETE ON audit_event_students
    FOR EACH ROW EXECUTE FUNCTION refuse_audit_change();
CREATE TRIGGER audit_event_students_no_truncate
    BEFORE TRUNCATE ON audit_event_students
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_audit_change();
