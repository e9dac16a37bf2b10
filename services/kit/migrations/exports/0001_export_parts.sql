-- Each service's part of a student's export (GDPR Art. 15 and 20; docs/adr/0010),
-- until the export expires. Kit-owned schema `exports`, tenant-scoped like every other.
-- A part holds the student's data: an erasure deletes it (column student_id), and the
-- retention job deletes expired ones.
CREATE TABLE export_parts (
    tenant        text        NOT NULL DEFAULT current_setting('learnflow.tenant')
                              CHECK (tenant <> ''),
    -- The export's id (students/{student}/exports/{export}).
    export        text        NOT NULL,
    service       text        NOT NULL,
    student_id    text        NOT NULL,
    -- Record kind (table or cache) -> the records, as JSON.
    content       jsonb       NOT NULL,
    collected_at  timestamptz NOT NULL DEFAULT now(),
    expires_at    timestamptz NOT NULL,
    PRIMARY KEY (tenant, export, service)
);
CREATE INDEX export_parts_student ON export_parts (tenant, student_id);
CREATE INDEX export_parts_expiry ON export_parts (expires_at);
ALTER TABLE export_parts ENABLE ROW LEVEL SECURITY;
ALTER TABLE export_parts FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_rows ON export_parts
    USING (tenant = current_setting('learnflow.tenant', true));
