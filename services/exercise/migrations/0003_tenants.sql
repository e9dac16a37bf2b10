-- depends: 0002_generated
-- Schools are tenants (docs/adr/0006, as services/kit/migrations/roster/0002_tenants.sql):
-- a student id is unique within its tenant, so every submission, quiz and generated
-- exercise belongs to the tenant of its student, and a transaction sees the rows of the
-- tenant it is scoped to (`learnflow.tenant`) only. A generated exercise belongs to the
-- tenant of the student it was generated for: it was written for them (their level,
-- their recurring error) and only they submit to it. Rows from before tenants belong to
-- the development tenant. (The store also names the tenant in its queries: defence in
-- depth, the policy is what keeps tenants apart.)

-- submissions
ALTER TABLE submissions ADD COLUMN tenant text NOT NULL DEFAULT 'dev';
ALTER TABLE submissions ALTER COLUMN tenant SET DEFAULT current_setting('learnflow.tenant');
ALTER TABLE submissions ADD CONSTRAINT submissions_tenant_named CHECK (tenant <> '');
ALTER TABLE submissions DROP CONSTRAINT submissions_pkey;
ALTER TABLE submissions ADD PRIMARY KEY (tenant, student_id, submission_id);
DROP INDEX submissions_recent;
CREATE INDEX submissions_recent ON submissions (tenant, student_id, created_at DESC);
-- A retried CreateSubmission with the same request_id returns the first result (of the
-- same student of the same tenant).
DROP INDEX submissions_request;
CREATE UNIQUE INDEX submissions_request ON submissions (tenant, student_id, request_id)
    WHERE request_id IS NOT NULL;
ALTER TABLE submissions ENABLE ROW LEVEL SECURITY;
ALTER TABLE submissions FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_rows ON submissions
    USING (tenant = current_setting('learnflow.tenant', true));

-- quizzes
ALTER TABLE quizzes ADD COLUMN tenant text NOT NULL DEFAULT 'dev';
ALTER TABLE quizzes ALTER COLUMN tenant SET DEFAULT current_setting('learnflow.tenant');
ALTER TABLE quizzes ADD CONSTRAINT quizzes_tenant_named CHECK (tenant <> '');
ALTER TABLE quizzes DROP CONSTRAINT quizzes_pkey;
ALTER TABLE quizzes ADD PRIMARY KEY (tenant, student_id, quiz_id);
ALTER TABLE quizzes ENABLE ROW LEVEL SECURITY;
ALTER TABLE quizzes FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_rows ON quizzes
    USING (tenant = current_setting('learnflow.tenant', true));

-- generated exercises
ALTER TABLE generated_exercises ADD COLUMN tenant text NOT NULL DEFAULT 'dev';
ALTER TABLE generated_exercises
    ALTER COLUMN tenant SET DEFAULT current_setting('learnflow.tenant');
ALTER TABLE generated_exercises
    ADD CONSTRAINT generated_exercises_tenant_named CHECK (tenant <> '');
ALTER TABLE generated_exercises DROP CONSTRAINT generated_exercises_pkey;
ALTER TABLE generated_exercises ADD PRIMARY KEY (tenant, exercise_id);
DROP INDEX generated_exercises_student;
CREATE INDEX generated_exercises_student
    ON generated_exercises (tenant, student_id, created_at DESC);
ALTER TABLE generated_exercises ENABLE ROW LEVEL SECURITY;
ALTER TABLE generated_exercises FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_rows ON generated_exercises
    USING (tenant = current_setting('learnflow.tenant', true));
