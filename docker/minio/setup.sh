#!/bin/sh
# The object store's buckets, policies and users, for compose's `minio-buckets` job. Idempotent:
# run it again and nothing changes (a user's secret is reset to the one given).
#   crimes-lake-writer  read/write the data lake (bucket `data`): Airflow's ETL and training
#   crimes-lake-reader  read the data lake: the model services (their fallback bundles)
#   crimes-mlflow-store read/write MLflow's artifacts (bucket `mlflow`): the MLflow server only
# The gateway gets no credentials; the root user is used by this job alone.
set -eu

mc alias set lake http://minio:9000 "$MINIO_ROOT_USER" "$MINIO_ROOT_PASSWORD"
mc mb --ignore-existing lake/data lake/mlflow

user() {
    policy="crimes-$1" access_key="$2" secret_key="$3"
    if [ "$access_key" = "$MINIO_ROOT_USER" ]; then
        echo "minio-buckets: the $1 access key must not be the root user's" >&2
        exit 2
    fi
    mc admin policy create lake "$policy" "/setup/policies/$1.json"
    mc admin user add lake "$access_key" "$secret_key"
    # Attaching a policy already attached is an error to mc: then check it is there.
    mc admin policy attach lake "$policy" --user "$access_key" \
        || mc admin user info lake "$access_key" | grep -q "$policy"
}

user lake-writer "$CRIMES_LAKE_WRITER_ACCESS_KEY" "$CRIMES_LAKE_WRITER_SECRET_KEY"
user lake-reader "$CRIMES_LAKE_READER_ACCESS_KEY" "$CRIMES_LAKE_READER_SECRET_KEY"
user mlflow-store "$MLFLOW_STORE_ACCESS_KEY" "$MLFLOW_STORE_SECRET_KEY"
