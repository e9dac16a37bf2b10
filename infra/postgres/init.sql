-- Run once by the postgres image on an empty data directory (docker-compose.yml).
-- The services connect as `learnflow`, an ordinary role: row-level security keeps
-- tenants apart, superusers bypass it, and the services refuse to run as one
-- (docs/adr/0006-tenants-by-row-level-security.md).
CREATE ROLE learnflow LOGIN PASSWORD 'learnflow' NOSUPERUSER NOBYPASSRLS;
CREATE DATABASE learnflow OWNER learnflow;
