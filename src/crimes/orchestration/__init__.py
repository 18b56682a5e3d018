"""What the Airflow DAG files call: the Asset the ETL publishes, and the tasks' bodies."""
