#!/usr/bin/env bash
# Runs once, when the Postgres volume is first created: a user and a database for the MLflow tracking
# server, with the password compose requires (MLFLOW_DB_PASSWORD, see docker-compose.yaml's header).
# It does not run again: to change that password later, ALTER USER mlflow (or start from a new volume).
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
  --set mlflow_password="$MLFLOW_DB_PASSWORD" <<'SQL'
CREATE USER mlflow WITH PASSWORD :'mlflow_password';
CREATE DATABASE mlflow OWNER mlflow;
SQL
