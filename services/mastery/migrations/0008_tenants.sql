-- depends: 0007_topic_totals_hold_the_state
-- Schools are tenants (docs/adr/0006): every row of a student's state belongs to one, a
-- student id is unique within its tenant, and a transaction sees and writes the rows of
-- the tenant it is scoped to (`learnflow.tenant`) only: row-level security, forced on
-- the owner too. Rows from before tenants belong to the development tenant.
--
-- Two tables stay outside it: `outbox` (the relay drains every tenant's messages; each
-- payload names its tenant) and `history_pending` (the history job takes every
-- tenant's queue, then scopes each student's rebuild to their tenant).

ALTER TABLE students ADD COLUMN tenant text NOT NULL DEFAULT 'dev';
ALTER TABLE students DROP CONSTRAINT students_pkey;
ALTER TABLE students ADD PRIMARY KEY (tenant, student_id);
DROP INDEX students_cohort;
CREATE INDEX students_cohort ON students (tenant, cohort, student_id);

ALTER TABLE evidence ADD COLUMN tenant text NOT NULL DEFAULT 'dev';
ALTER TABLE evidence DROP CONSTRAINT evidence_pkey;
ALTER TABLE evidence ADD PRIMARY KEY (tenant, student_id, source, event_id);

ALTER TABLE exercise_best ADD COLUMN tenant text NOT NULL DEFAULT 'dev';
ALTER TABLE exercise_best DROP CONSTRAINT exercise_best_pkey;
ALTER TABLE exercise_best ADD PRIMARY KEY (tenant, student_id, exercise_id);

ALTER TABLE topic_totals ADD COLUMN tenant text NOT NULL DEFAULT 'dev';
ALTER TABLE topic_totals DROP CONSTRAINT topic_totals_pkey;
ALTER TABLE topic_totals ADD PRIMARY KEY (tenant, student_id, topic);

ALTER TABLE active_days ADD COLUMN tenant text NOT NULL DEFAULT 'dev';
ALTER TABLE active_days DROP CONSTRAINT active_days_pkey;
ALTER TABLE active_days ADD PRIMARY KEY (tenant, student_id, day, topic);

ALTER TABLE mastery_current ADD COLUMN tenant text NOT NULL DEFAULT 'dev';
ALTER TABLE mastery_current DROP CONSTRAINT mastery_current_pkey;
ALTER TABLE mastery_current ADD PRIMARY KEY (tenant, student_id, topic);
DROP INDEX mastery_current_overall;
CREATE INDEX mastery_current_overall ON mastery_current (tenant, topic, score);

ALTER TABLE mastery_daily ADD COLUMN tenant text NOT NULL DEFAULT 'dev';
ALTER TABLE mastery_daily DROP CONSTRAINT mastery_daily_pkey;
ALTER TABLE mastery_daily ADD PRIMARY KEY (tenant, student_id, topic, day);

ALTER TABLE operations ADD COLUMN tenant text NOT NULL DEFAULT 'dev';
ALTER TABLE operations DROP CONSTRAINT operations_pkey;
ALTER TABLE operations ADD PRIMARY KEY (tenant, name);

ALTER TABLE history_pending ADD COLUMN tenant text NOT NULL DEFAULT 'dev';
ALTER TABLE history_pending DROP CONSTRAINT history_pending_pkey;
ALTER TABLE history_pending ADD PRIMARY KEY (tenant, student_id);
ALTER TABLE history_pending ALTER COLUMN tenant DROP DEFAULT;

-- New rows take the transaction's tenant; none may be written outside one.
DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['students', 'evidence', 'exercise_best', 'topic_totals',
                             'active_days', 'mastery_current', 'mastery_daily', 'operations']
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
