-- Runs once, when the postgres volume is first initialised (docker-entrypoint-initdb.d).
-- MLflow gets the database named by POSTGRES_DB (mlflow); the inference store gets its own,
-- so each can be backed up, restored and sized on its own. sentops creates its tables.
CREATE DATABASE inference;
