"""The object store's identities and buckets, written once for every deployment (the local
stack, compose, Kubernetes).

SeaweedFS serves the S3 API with static identities, each allowed named actions on named buckets,
read from its `-s3.config` file. That file is made here from the environment at start, so no
credential is ever committed; the buckets are then created through the S3 API by the admin
identity, whose only right is to administer the project's two buckets. Least privilege:
  admin         creates the buckets (the bucket job alone holds it)
  lake-writer   reads and writes the data lake (the ETL and the training)
  lake-reader   reads the data lake (the model services: their fallback bundles)
  mlflow-store  reads and writes MLflow's artifacts (the MLflow server alone)
  prediction-log  writes (and may delete) prediction log files, reads the latest evaluation (the
                gateway): nothing else of the lake, not even a listing.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Self

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from crimes.lake import layout

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

LAKE_BUCKET: Final = "data"
MLFLOW_BUCKET: Final = "mlflow"
BUCKETS: Final = (LAKE_BUCKET, MLFLOW_BUCKET)
REGION: Final = "us-east-1"

# SeaweedFS' action names (Read covers GET and HEAD, List the listings, Write PUT, DELETE and
# multipart uploads, Admin the bucket itself).
_READ = ("Read", "List")
_READ_WRITE = ("Read", "List", "Write")

# The gateway's two prefixes of the lake (SeaweedFS matches `<action>:<bucket>/<prefix>*`).
_PREDICTION_LOG_ACTIONS = (
    f"Write:{{bucket}}/{layout.PREDICTION_LOG_PREFIX}/*",
    f"Read:{{bucket}}/{layout.EVALUATION_PREFIX}/*",
)

_ACCESS_KEY = re.compile(r"[A-Za-z0-9._-]{3,128}")


@dataclass(frozen=True)
class Identity:
    """One S3 identity: who (its keys) may do what on which bucket."""

    name: str
    access_key: str
    secret_key: SecretStr
    actions: tuple[str, ...]


def _alias(*names: str) -> Any:
    return Field(validation_alias=AliasChoices(*names))


def _access_key_shape(value: str) -> str:
    if not _ACCESS_KEY.fullmatch(value):
        raise ValueError("must be 3-128 letters, digits, '.', '_' or '-'")
    return value


def _secret_shape(value: SecretStr) -> SecretStr:
    secret = value.get_secret_value()
    if len(secret) < 8 or any(c.isspace() or not c.isprintable() for c in secret):
        raise ValueError("must be at least 8 printable characters without whitespace")
    return value


class ObjectStoreAdmin(BaseSettings):
    """The admin identity's keys (the bucket job needs nothing else); required."""

    model_config = SettingsConfigDict(extra="ignore", validate_by_name=True)

    admin_access_key: str = _alias("CRIMES_OBJECT_STORE_ADMIN_ACCESS_KEY")
    admin_secret_key: SecretStr = _alias("CRIMES_OBJECT_STORE_ADMIN_SECRET_KEY")

    _admin_access_key = field_validator("admin_access_key")(_access_key_shape)
    _admin_secret_key = field_validator("admin_secret_key")(_secret_shape)


class ObjectStoreIdentities(ObjectStoreAdmin):
    """The four identities' keys, all required (no default: a deployment that forgot one fails
    at start with the variable's name)."""

    lake_writer_access_key: str = _alias("CRIMES_LAKE_WRITER_ACCESS_KEY")
    lake_writer_secret_key: SecretStr = _alias("CRIMES_LAKE_WRITER_SECRET_KEY")
    lake_reader_access_key: str = _alias("CRIMES_LAKE_READER_ACCESS_KEY")
    lake_reader_secret_key: SecretStr = _alias("CRIMES_LAKE_READER_SECRET_KEY")
    mlflow_store_access_key: str = _alias("MLFLOW_STORE_ACCESS_KEY")
    mlflow_store_secret_key: SecretStr = _alias("MLFLOW_STORE_SECRET_KEY")
    prediction_log_access_key: str = _alias("CRIMES_PREDICTION_LOG_ACCESS_KEY")
    prediction_log_secret_key: SecretStr = _alias("CRIMES_PREDICTION_LOG_SECRET_KEY")

    _access_keys = field_validator(
        "lake_writer_access_key",
        "lake_reader_access_key",
        "mlflow_store_access_key",
        "prediction_log_access_key",
    )(_access_key_shape)
    _secret_keys = field_validator(
        "lake_writer_secret_key",
        "lake_reader_secret_key",
        "mlflow_store_secret_key",
        "prediction_log_secret_key",
    )(_secret_shape)

    @model_validator(mode="after")
    def _distinct(self) -> Self:
        keys = [i.access_key for i in self.identities()]
        if len(set(keys)) != len(keys):
            raise ValueError("each identity needs its own access key")
        return self

    def identities(self) -> list[Identity]:
        def on(bucket: str, actions: Iterable[str]) -> tuple[str, ...]:
            return tuple(f"{action}:{bucket}" for action in actions)

        return [
            Identity(
                "admin",
                self.admin_access_key,
                self.admin_secret_key,
                tuple(f"Admin:{bucket}" for bucket in BUCKETS),
            ),
            Identity(
                "lake-writer",
                self.lake_writer_access_key,
                self.lake_writer_secret_key,
                on(LAKE_BUCKET, _READ_WRITE),
            ),
            Identity(
                "lake-reader",
                self.lake_reader_access_key,
                self.lake_reader_secret_key,
                on(LAKE_BUCKET, _READ),
            ),
            Identity(
                "mlflow-store",
                self.mlflow_store_access_key,
                self.mlflow_store_secret_key,
                on(MLFLOW_BUCKET, _READ_WRITE),
            ),
            Identity(
                "prediction-log",
                self.prediction_log_access_key,
                self.prediction_log_secret_key,
                tuple(action.format(bucket=LAKE_BUCKET) for action in _PREDICTION_LOG_ACTIONS),
            ),
        ]


def seaweedfs_config(identities: ObjectStoreIdentities) -> dict[str, Any]:
    """The `-s3.config` document of SeaweedFS for these identities."""
    return {
        "identities": [
            {
                "name": identity.name,
                "credentials": [
                    {
                        "accessKey": identity.access_key,
                        "secretKey": identity.secret_key.get_secret_value(),
                    }
                ],
                "actions": list(identity.actions),
            }
            for identity in identities.identities()
        ]
    }


def write_seaweedfs_config(
    identities: ObjectStoreIdentities, path: Path, owner: tuple[int, int] | None = None
) -> None:
    """Write the config readable by its owner only, atomically (a server starting beside this
    never reads half a file); `owner` (uid, gid) hands it to the server's user."""
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=".identities-")
    try:
        with os.fdopen(descriptor, "w") as out:
            json.dump(seaweedfs_config(identities), out)
        os.chmod(temporary, 0o600)
        if owner is not None:
            os.chown(temporary, *owner)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def s3_client(endpoint_url: str, access_key: str, secret_key: SecretStr) -> S3Client:
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=endpoint_url,
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key.get_secret_value(),
        region_name=REGION,
        config=Config(
            s3={"addressing_style": "path"},
            retries={"max_attempts": 2},
            connect_timeout=2,
            read_timeout=10,
            proxies={},
        ),
    )


def ensure_buckets(endpoint_url: str, admin: ObjectStoreAdmin) -> list[str]:
    """Create the project's buckets that do not exist yet, as the admin identity; returns the
    names created (idempotent: a second run creates nothing)."""
    from botocore.exceptions import ClientError

    client = s3_client(endpoint_url, admin.admin_access_key, admin.admin_secret_key)
    existing = {b["Name"] for b in client.list_buckets().get("Buckets", []) if "Name" in b}
    created: list[str] = []
    for bucket in BUCKETS:
        if bucket in existing:
            continue
        try:
            client.create_bucket(Bucket=bucket)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code")
            if code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                raise
        else:
            created.append(bucket)
    return created
