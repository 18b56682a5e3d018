"""The local stack of real services: object store (SeaweedFS S3 or folders), MLflow, its database.

`up` starts what is not running and waits until everything is healthy, `down` stops exactly what
`up` started, `status` reports, `env_exports` gives the environment a client needs.
"""

from crimes.local.stack.core import (
    PartStatus,
    down,
    env_exports,
    free_port,
    free_port_block,
    prediction_log_only,
    read_only,
    status,
    up,
)
from crimes.local.stack.procs import StackError

__all__ = [
    "PartStatus",
    "StackError",
    "down",
    "env_exports",
    "free_port",
    "free_port_block",
    "prediction_log_only",
    "read_only",
    "status",
    "up",
]
