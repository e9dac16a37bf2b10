-- Students erased (GDPR Art. 17; docs/adr/0009), by pseudonym only (a digest of tenant
-- and id): the consumers that would store a student's late events ask here, and
-- dead-letter them. Kit-owned schema `erasure`, tenant-scoped like every other.
CREATE TABLE erased_students (
    tenant      text        NOT NULL DEFAULT current_setting('learnflow.tenant')
                            CHECK (tenant <> ''),
    pseudonym   text        NOT NULL,
    -- The erasure's operation (`operations/{id}`).
    erasure     text        NOT NULL,
    erased_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant, pseudonym)
);
ALTER TABLE erased_students ENABLE ROW LEVEL SECURITY;
ALTER TABLE erased_students FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_rows ON erased_students
    USING (tenant = current_setting('learnflow.tenant', true));
