#!/bin/sh
# Runs once, when the postgres volume is first initialised (docker-entrypoint-initdb.d):
# init-inference-db.sql with the role passwords from the environment (docker-compose.yml).
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
    -v mlflow_password="$MLFLOW_DB_PASSWORD" \
    -v owner_password="$SENTOPS_DB_OWNER_PASSWORD" \
    -v api_password="$SENTOPS_DB_API_PASSWORD" \
    -v jobs_password="$SENTOPS_DB_JOBS_PASSWORD" \
    -f /sentops-init/init-inference-db.sql
