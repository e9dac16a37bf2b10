-- depends: 0009_outbox_tenant
-- Retention (issue 14): evidence older than the window is purged, and what it added to
-- the aggregates is kept here, so a rebuild (recalculation, history) starts from it
-- and ends where the incremental path did. The same aggregation rule as the batches
-- (services/mastery/domain/events.py `add`): the best score per exercise under its
-- lowest topic with its attempts, additive quiz and quality totals, the active days.
CREATE TABLE baseline_exercises (
    tenant       text     NOT NULL,
    student_id   text     NOT NULL,
    exercise_id  text     NOT NULL,
    topic        smallint NOT NULL,
    best         float8   NOT NULL,
    attempts     integer  NOT NULL,
    PRIMARY KEY (tenant, student_id, exercise_id)
);
CREATE TABLE baseline_totals (
    tenant         text     NOT NULL,
    student_id     text     NOT NULL,
    topic          smallint NOT NULL,
    quiz_sum       float8   NOT NULL,
    quiz_count     integer  NOT NULL,
    quality_sum    float8   NOT NULL,
    quality_count  integer  NOT NULL,
    PRIMARY KEY (tenant, student_id, topic)
);
CREATE TABLE baseline_days (
    tenant      text     NOT NULL,
    student_id  text     NOT NULL,
    topic       smallint NOT NULL,
    day         date     NOT NULL,
    PRIMARY KEY (tenant, student_id, topic, day)
);
-- Per student: every piece of evidence of a day up to `through_day` (their time zone)
-- was purged into the baseline; history days up to then are kept as they were.
CREATE TABLE evidence_baseline (
    tenant       text NOT NULL,
    student_id   text NOT NULL,
    through_day  date NOT NULL,
    PRIMARY KEY (tenant, student_id)
);

DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['baseline_exercises', 'baseline_totals', 'baseline_days',
                             'evidence_baseline']
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
