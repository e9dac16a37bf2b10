-- depends: 0002_tenants
-- The tenants (schools) the platform has seen, by id only: jobs that run for every
-- tenant (retention) list them here, since row-level security shows a transaction one
-- tenant's rows. Filled as the roster enrols students; no personal data.
CREATE TABLE tenants (
    tenant      text        PRIMARY KEY CHECK (tenant <> ''),
    first_seen  timestamptz NOT NULL DEFAULT now()
);
