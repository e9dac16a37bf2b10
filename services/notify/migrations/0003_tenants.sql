-- depends: 0002_updates
-- Schools are tenants (docs/adr/0006; the model is the kit's roster/0002_tenants.sql).
-- Every alert, piece of evidence and live update belongs to one tenant: the column
-- defaults to the transaction's `learnflow.tenant` (services.kit.db.Database.scoped),
-- keys lead with it, and row-level security (forced on the owner too) shows and
-- accepts only the rows of the tenant the transaction is scoped to. Rows from before
-- tenants belong to the development tenant.
--
-- processed_events keeps no tenant and no row-level security: it is the consumer's
-- inbox of event ids, claimed per event inside whichever tenant's transaction applies
-- the event. A (source, event_id) names one event whatever its tenant (ids are unique
-- per source, and a redelivery carries the same tenant), so the tenant would add
-- nothing to the key; the table holds no tenant's data, only which events were applied.

-- -- alerts and their evidence ----------------------------------------------------------

ALTER TABLE alerts ADD COLUMN tenant text NOT NULL DEFAULT 'dev';
ALTER TABLE alerts ALTER COLUMN tenant SET DEFAULT current_setting('learnflow.tenant');
ALTER TABLE alerts ADD CONSTRAINT alerts_tenant_named CHECK (tenant <> '');

ALTER TABLE alert_evidence ADD COLUMN tenant text NOT NULL DEFAULT 'dev';
ALTER TABLE alert_evidence ALTER COLUMN tenant SET DEFAULT current_setting('learnflow.tenant');
ALTER TABLE alert_evidence ADD CONSTRAINT alert_evidence_tenant_named CHECK (tenant <> '');

ALTER TABLE alert_evidence DROP CONSTRAINT alert_evidence_alert_id_fkey;
ALTER TABLE alert_evidence DROP CONSTRAINT alert_evidence_pkey;
ALTER TABLE alerts DROP CONSTRAINT alerts_pkey;
ALTER TABLE alerts ADD PRIMARY KEY (tenant, alert_id);
ALTER TABLE alert_evidence ADD PRIMARY KEY (tenant, alert_id, seq);
-- Evidence belongs to an alert of its own tenant.
ALTER TABLE alert_evidence ADD CONSTRAINT alert_evidence_alert_fkey
    FOREIGN KEY (tenant, alert_id) REFERENCES alerts (tenant, alert_id) ON DELETE CASCADE;

-- One unresolved alert per episode of a tenant: the same student id hitting the same
-- error in two schools is two students and two episodes.
DROP INDEX alerts_one_open_per_episode;
CREATE UNIQUE INDEX alerts_one_open_per_episode ON alerts (tenant, episode_key)
    WHERE state <> 3 AND episode_key <> '';
DROP INDEX alerts_by_cohort;
CREATE INDEX alerts_by_cohort ON alerts (tenant, cohort, created_at DESC, alert_id DESC);
DROP INDEX alerts_by_student;
CREATE INDEX alerts_by_student ON alerts (tenant, student_id, created_at DESC);

ALTER TABLE alerts ENABLE ROW LEVEL SECURITY;
ALTER TABLE alerts FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_rows ON alerts
    USING (tenant = current_setting('learnflow.tenant', true));
ALTER TABLE alert_evidence ENABLE ROW LEVEL SECURITY;
ALTER TABLE alert_evidence FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_rows ON alert_evidence
    USING (tenant = current_setting('learnflow.tenant', true));

-- -- the update log -------------------------------------------------------------------

-- Each tenant's log has its own cursors: `seq` counts that tenant's updates only
-- (from updates_horizon.last_seq, below), so a cursor says nothing about another
-- school's activity and means nothing in another tenant. The development tenant's rows
-- keep their seq, so cursors handed out before tenants still resume.
ALTER TABLE updates ADD COLUMN tenant text NOT NULL DEFAULT 'dev';
ALTER TABLE updates ALTER COLUMN tenant SET DEFAULT current_setting('learnflow.tenant');
ALTER TABLE updates ADD CONSTRAINT updates_tenant_named CHECK (tenant <> '');
ALTER TABLE updates ALTER COLUMN seq DROP DEFAULT;
DROP SEQUENCE updates_seq_seq;
ALTER TABLE updates DROP CONSTRAINT updates_pkey;
ALTER TABLE updates ADD PRIMARY KEY (tenant, seq);

DROP INDEX updates_once_per_event;
CREATE UNIQUE INDEX updates_once_per_event ON updates (tenant, ce_source, ce_id)
    WHERE ce_id IS NOT NULL;
DROP INDEX updates_by_student;
CREATE INDEX updates_by_student ON updates (tenant, student_id, seq)
    WHERE student_id IS NOT NULL;
DROP INDEX updates_by_cohort;
CREATE INDEX updates_by_cohort ON updates (tenant, cohort, seq) WHERE cohort IS NOT NULL;
DROP INDEX updates_by_time;
CREATE INDEX updates_by_time ON updates (tenant, created_at);

-- One row per tenant with a log: the last seq handed out (`last_seq`; writers lock the
-- row until they commit, so a tenant's seq order is its commit order) and how far its
-- log has been purged (`purged_through`: a cursor below it is too old to resume from).
-- No row-level security: each replica's update listener reads every tenant's row to
-- learn whose log has grown, and the purge walks every tenant's; the table holds only
-- tenant ids and counters. Code that serves a caller reads its own tenant's row only
-- (services/notify/updates.py: check_cursor, head).
ALTER TABLE updates_horizon ADD COLUMN tenant text NOT NULL DEFAULT 'dev';
ALTER TABLE updates_horizon ALTER COLUMN tenant DROP DEFAULT;
ALTER TABLE updates_horizon ADD CONSTRAINT updates_horizon_tenant_named CHECK (tenant <> '');
ALTER TABLE updates_horizon ADD COLUMN last_seq bigint NOT NULL DEFAULT 0;
ALTER TABLE updates_horizon DROP COLUMN id;
ALTER TABLE updates_horizon ADD PRIMARY KEY (tenant);
UPDATE updates_horizon
    SET last_seq = greatest(purged_through, (SELECT coalesce(max(seq), 0) FROM updates));

-- Last: the UPDATE above reads every row of the log.
ALTER TABLE updates ENABLE ROW LEVEL SECURITY;
ALTER TABLE updates FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_rows ON updates
    USING (tenant = current_setting('learnflow.tenant', true));
