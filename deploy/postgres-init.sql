-- Runs once, when the Postgres volume is first created: a database for the MLflow tracking server.
-- The password is the compose default on the private compose network (see docker-compose.yaml's header).
CREATE USER mlflow WITH PASSWORD 'mlflow';
CREATE DATABASE mlflow OWNER mlflow;
