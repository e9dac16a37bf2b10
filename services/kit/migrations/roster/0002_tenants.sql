-- depends: 0001_students
-- Schools are tenants (docs/adr/0006): a student id is unique within its tenant, and a
-- transaction sees the rows of the tenant it is scoped to (`learnflow.tenant`) only.
-- Rows from before tenants belong to the development tenant.
ALTER TABLE students ADD COLUMN tenant text NOT NULL DEFAULT 'dev';
ALTER TABLE students ALTER COLUMN tenant SET DEFAULT current_setting('learnflow.tenant');
ALTER TABLE students ADD CONSTRAINT students_tenant_named CHECK (tenant <> '');
ALTER TABLE students DROP CONSTRAINT students_pkey;
ALTER TABLE students ADD PRIMARY KEY (tenant, student_id);
DROP INDEX students_by_cohort;
CREATE INDEX students_by_cohort ON students (tenant, cohort);
ALTER TABLE students ENABLE ROW LEVEL SECURITY;
ALTER TABLE students FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_rows ON students
    USING (tenant = current_setting('learnflow.tenant', true));
