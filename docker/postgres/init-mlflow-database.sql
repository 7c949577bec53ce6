-- Runs once, when the postgres container starts on an empty data volume
-- (files in /docker-entrypoint-initdb.d/). POSTGRES_DB creates the `prefect`
-- database; MLflow gets its own, in the same instance, owned by the same user.
CREATE DATABASE mlflow;
