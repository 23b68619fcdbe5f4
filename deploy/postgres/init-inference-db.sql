-- The databases and the PostgreSQL roles of sentops, each role with only what it needs.
-- Run once, as a superuser, with psql and the four passwords as variables:
--
--   psql -v ON_ERROR_STOP=1 -v mlflow_password=... -v owner_password=... \
--        -v api_password=... -v jobs_password=... -f init-inference-db.sql
--
-- Compose runs it on the first start of the postgres volume (20-sentops-roles.sh passes the
-- passwords from .env); on a managed PostgreSQL the DBA runs it (docs/security.md).
--
--   mlflow         owns `mlflow` (runs, registry) and `mlflow_auth` (MLflow's users): the MLflow server
--   sentops_owner  owns `inference` and its tables: `sentops db upgrade` only
--   sentops_api    rows of `inference` (SELECT, INSERT, UPDATE, DELETE): the API
--   sentops_jobs   the same rights: the drift check (prunes old rows too), retraining
--
-- The two runtime roles cannot create, alter or drop a table, and no sentops role can
-- connect to MLflow's databases.
\set ON_ERROR_STOP on

CREATE ROLE mlflow LOGIN PASSWORD :'mlflow_password';
CREATE ROLE sentops_owner LOGIN PASSWORD :'owner_password';
CREATE ROLE sentops_api LOGIN PASSWORD :'api_password';
CREATE ROLE sentops_jobs LOGIN PASSWORD :'jobs_password';

CREATE DATABASE mlflow OWNER mlflow;
CREATE DATABASE mlflow_auth OWNER mlflow;
-- its own database, so it can be backed up, restored and sized apart from MLflow's
CREATE DATABASE inference OWNER sentops_owner;

-- PUBLIC may connect to any new database by default: only the roles that need one may
REVOKE ALL ON DATABASE mlflow, mlflow_auth, inference FROM PUBLIC;
GRANT CONNECT ON DATABASE inference TO sentops_api, sentops_jobs;

\connect inference
-- PostgreSQL before 15 lets every role create tables in `public`: only the owner may
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
GRANT USAGE ON SCHEMA public TO sentops_api, sentops_jobs;
-- the tables and sequences `sentops db upgrade` creates (now and in later revisions)
ALTER DEFAULT PRIVILEGES FOR ROLE sentops_owner IN SCHEMA public
    GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO sentops_api, sentops_jobs;
ALTER DEFAULT PRIVILEGES FOR ROLE sentops_owner IN SCHEMA public
    GRANT USAGE, SELECT ON SEQUENCES TO sentops_api, sentops_jobs;
