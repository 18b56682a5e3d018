# One multi-stage file, one target per deployable. Reproducible from uv.lock, slim, non-root.
# It needs nothing but its base image and the package index: no BuildKit frontend, no other
# registry's image, no build-time mounts (the legacy builder and BuildKit both build it).

FROM python:3.11.11-slim-bookworm AS build
# uv at the version the Makefile pins, from PyPI.
RUN python3 -m pip install --no-cache-dir --disable-pip-version-check uv==0.13.8
ENV UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy UV_PROJECT_ENVIRONMENT=/opt/venv \
    UV_PYTHON_DOWNLOADS=never UV_NO_CACHE=1
WORKDIR /src
# Dependencies first (cached while only the code changes), then the project itself.
COPY pyproject.toml uv.lock README.md ./
RUN uv sync --locked --no-dev --no-install-project
COPY src ./src
RUN uv sync --locked --no-dev --no-editable

FROM python:3.11.11-slim-bookworm AS runtime
# (The gateway's prediction log spill folder: a volume mounted there starts as the user's.)
RUN groupadd --gid 50000 crimes && useradd --uid 50000 --gid crimes --create-home crimes \
    && mkdir -p /var/lib/crimes/prediction-log && chown -R crimes:crimes /var/lib/crimes
COPY --from=build /opt/venv /opt/venv
# Each deployment's own settings (model, alias, ports), the same files compose reads.
COPY services /opt/crimes/services
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 CRIMES_LOG_FORMAT=json \
    CRIMES_DEPLOYMENTS_DIR=/opt/crimes/services
WORKDIR /home/crimes
USER crimes

# MLflow tracking server (backend store in PostgreSQL, artifacts proxied to the object store).
FROM runtime AS mlflow
ENV MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false
EXPOSE 5001
CMD ["mlflow", "server", "--host", "0.0.0.0", "--port", "5001", "--workers", "1", "--serve-artifacts"]

# Airflow 3 (api-server, scheduler, dag-processor, triggerer): the DAGs and the project's
# package are baked in, never installed by tasks at run time.
FROM runtime AS airflow
ENV AIRFLOW_HOME=/opt/airflow AIRFLOW__CORE__DAGS_FOLDER=/opt/airflow/dags \
    AIRFLOW__CORE__LOAD_EXAMPLES=False
USER root
RUN mkdir -p /opt/airflow/logs && chown -R crimes:crimes /opt/airflow
COPY --chown=crimes:crimes airflow/dags /opt/airflow/dags
USER crimes
EXPOSE 8080
CMD ["airflow", "api-server"]
