-- Consent (issue 14; docs/adr/0011): each choice a student (or an admin for them)
-- records, append-only, and each school's defaults. Kit-owned schema `consent`,
-- tenant-scoped like every other: the agents ask it before a model call.
CREATE TABLE consent_records (
    tenant       text        NOT NULL DEFAULT current_setting('learnflow.tenant')
                             CHECK (tenant <> ''),
    student_id   text        NOT NULL,
    purpose      text        NOT NULL CHECK (purpose IN ('analytics', 'model_use')),
    granted      boolean     NOT NULL,
    recorded_by  text        NOT NULL,
    recorded_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    id           bigserial,
    PRIMARY KEY (tenant, student_id, id)
);
CREATE INDEX consent_records_latest ON consent_records (tenant, student_id, purpose, id DESC);

CREATE TABLE tenant_defaults (
    tenant       text        NOT NULL DEFAULT current_setting('learnflow.tenant')
                             CHECK (tenant <> ''),
    purpose      text        NOT NULL CHECK (purpose IN ('analytics', 'model_use')),
    granted      boolean     NOT NULL,
    recorded_by  text        NOT NULL,
    recorded_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (tenant, purpose)
);

ALTER TABLE consent_records ENABLE ROW LEVEL SECURITY;
ALTER TABLE consent_records FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_rows ON consent_records
    USING (tenant = current_setting('learnflow.tenant', true));
ALTER TABLE tenant_defaults ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenant_defaults FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_rows ON tenant_defaults
    USING (tenant = current_setting('learnflow.tenant', true));
