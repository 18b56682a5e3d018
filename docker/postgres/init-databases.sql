-- Runs once, on the first start of an empty PostgreSQL volume.
CREATE DATABASE mlflow;
CREATE DATABASE airflow;
