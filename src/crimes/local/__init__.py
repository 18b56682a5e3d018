"""Running the whole system on one machine: the local stack, Airflow as processes, the
demo, and the Chicago Data Portal double. Tooling only: no production part imports it."""
