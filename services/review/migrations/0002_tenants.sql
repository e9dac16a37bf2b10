-- depends: 0001_review
-- Schools are tenants (docs/adr/0006): every code review belongs to one, a student id
-- is unique within its tenant, and a transaction sees and writes the reviews of the
-- tenant it is scoped to (`learnflow.tenant`) only: row-level security, forced on the
-- owner too. Rows from before tenants belong to the development tenant.

ALTER TABLE code_reviews ADD COLUMN tenant text NOT NULL DEFAULT 'dev';
-- New rows take the transaction's tenant; none may be written outside one.
ALTER TABLE code_reviews ALTER COLUMN tenant SET DEFAULT current_setting('learnflow.tenant');
ALTER TABLE code_reviews ADD CONSTRAINT code_reviews_tenant_named CHECK (tenant <> '');
ALTER TABLE code_reviews DROP CONSTRAINT code_reviews_pkey;
ALTER TABLE code_reviews ADD PRIMARY KEY (tenant, student_id, review_id);
-- ListCodeReviews: a student's reviews in their tenant, newest first.
DROP INDEX code_reviews_recent;
CREATE INDEX code_reviews_recent
    ON code_reviews (tenant, student_id, create_time DESC, review_id DESC);
ALTER TABLE code_reviews ENABLE ROW LEVEL SECURITY;
ALTER TABLE code_reviews FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_rows ON code_reviews
    USING (tenant = current_setting('learnflow.tenant', true));
