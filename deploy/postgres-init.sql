-- Run once by the postgres image on first start (docker-entrypoint-initdb.d). The image creates
-- the `optuna` database from POSTGRES_DB; MLflow gets its own database because both keep an
-- `alembic_version` table of their own.
CREATE DATABASE mlflow;
