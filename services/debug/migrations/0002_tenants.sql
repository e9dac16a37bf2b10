-- depends: 0001_debug
-- Schools are tenants (docs/adr/0006): every diagnosis, error occurrence and struggle
-- episode belongs to one, a student id is unique within its tenant, and a transaction
-- sees and writes the rows of the tenant it is scoped to (`learnflow.tenant`) only:
-- row-level security, forced on the owner too. Rows from before tenants belong to the
-- development tenant. No job reads these tables across tenants, so all three have RLS.

ALTER TABLE diagnoses ADD COLUMN tenant text NOT NULL DEFAULT 'dev';
ALTER TABLE diagnoses DROP CONSTRAINT diagnoses_pkey;
ALTER TABLE diagnoses ADD PRIMARY KEY (tenant, student_id, diagnosis_id);
DROP INDEX diagnoses_recent;
CREATE INDEX diagnoses_recent ON diagnoses (tenant, student_id, created_at DESC);

ALTER TABLE error_occurrences ADD COLUMN tenant text NOT NULL DEFAULT 'dev';
ALTER TABLE error_occurrences DROP CONSTRAINT error_occurrences_pkey;
ALTER TABLE error_occurrences ADD PRIMARY KEY (tenant, id);
DROP INDEX error_occurrences_recent;
CREATE INDEX error_occurrences_recent
    ON error_occurrences (tenant, student_id, occurred_at DESC);

ALTER TABLE struggle_episodes ADD COLUMN tenant text NOT NULL DEFAULT 'dev';
ALTER TABLE struggle_episodes DROP CONSTRAINT struggle_episodes_pkey;
ALTER TABLE struggle_episodes ADD PRIMARY KEY (tenant, episode_id);
DROP INDEX struggle_episodes_student;
CREATE INDEX struggle_episodes_student
    ON struggle_episodes (tenant, student_id, detected_at DESC);

-- New rows take the transaction's tenant; none may be written outside one.
DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['diagnoses', 'error_occurrences', 'struggle_episodes']
    LOOP
        EXECUTE format('ALTER TABLE %I ALTER COLUMN tenant '
                       'SET DEFAULT current_setting(''learnflow.tenant'')', t);
        EXECUTE format('ALTER TABLE %I ADD CONSTRAINT %I CHECK (tenant <> '''')',
                       t, t || '_tenant_named');
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
        EXECUTE format('CREATE POLICY tenant_rows ON %I '
                       'USING (tenant = current_setting(''learnflow.tenant'', true))', t);
    END LOOP;
END
$$;
